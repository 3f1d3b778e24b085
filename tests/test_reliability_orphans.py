"""Kill -9 of a sweep that runs each run in its own process (--executor subprocess): the run's
process must not live on as an orphan, training beside the rerun that resumes the same run."""

import os
import signal
import time
from pathlib import Path

import pytest

from reliability_support import checkpoints, driver_process, sweep_command, wait_for


def command(out: Path, data: Path) -> list[str]:
    return sweep_command(out, data, "--methods", "full", "--seeds", "0", "--executor", "subprocess",
                         "--set", "train.steps=1000000", "--set", "train.eval_every=10")  # would train for hours


def children(pid: int) -> list[int]:
    """Live (non-zombie) processes whose parent is `pid`."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid and fields[0] != "Z":
            found.append(int(stat.parent.name))
    return found


def alive(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


@pytest.mark.slow
@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="reads the process table from /proc")
def test_sigkill_of_the_driver_ends_the_run_process(tmp_path):
    out, data = tmp_path / "out", tmp_path / "data"
    with driver_process(command(out, data), tmp_path) as proc:
        wait_for(proc, lambda: checkpoints(out), "a checkpoint of the run's process", 240)  # it is training
        run_processes = children(proc.pid)
        assert run_processes
        os.kill(proc.pid, signal.SIGKILL)

    deadline = time.monotonic() + 20
    while any(alive(pid) for pid in run_processes) and time.monotonic() < deadline:
        time.sleep(0.1)
    survivors = [pid for pid in run_processes if alive(pid)]
    for pid in survivors:  # leave nothing running, whatever the outcome
        os.kill(pid, signal.SIGKILL)
    assert survivors == []

