"""Two sweeps on one output folder: the second is refused with one line while the first runs, and
the folder is free again the moment the first one dies (kill -9 included).

Real processes through the real CLI (tests/reliability_driver.py): the first sweep trains a run
that sleeps in every step, so it is still training while the second ones start.
"""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from reliability_support import FAULTY_PLUGIN, write_plugin

ROOT = Path(__file__).resolve().parent.parent
DRIVER = ROOT / "tests" / "reliability_driver.py"


def command(tmp_path: Path, *extra: str) -> list[str]:
    return [sys.executable, str(DRIVER), "run", "--suite", "reliability", "--seeds", "0",
            "--out", str(tmp_path / "out"), "--data-dir", str(tmp_path / "data"), "--device", "cpu",
            "--plugin", str(tmp_path / "faulty.py"), "--set", "train.eval_every=2", *extra]


FIRST = ("--methods", "faulty-slow", "--set", "train.steps=100000")
# (id, flags of the second sweep, its exit status, a part of its one stderr line or None)
SECOND = [
    ("other-config-same-run", ("--methods", "faulty-slow", "--set", "train.steps=4"), 2, "is in use by another sweep"),
    ("other-run-same-folder", ("--methods", "full", "--set", "train.steps=4"), 2, "is in use by another sweep"),
    ("same-command", FIRST, 2, "is in use by another sweep"),
    ("dry-run-reads-only", (*FIRST, "--dry-run"), 0, None),
]


def environment() -> dict[str, str]:
    return {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}


def wait_for_checkpoint(proc: subprocess.Popen, out: Path, limit_s: float = 120) -> None:
    deadline = time.monotonic() + limit_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"the first sweep ended (status {proc.returncode}) before the second started")
        if list((out / "checkpoints").glob("*/*/seed*.pt")):
            return
        time.sleep(0.02)
    pytest.fail("the first sweep wrote no checkpoint in time")


@pytest.mark.slow
def test_second_sweep_on_a_busy_folder_is_refused_and_the_lock_dies_with_its_holder(tmp_path):
    write_plugin(tmp_path, "faulty", FAULTY_PLUGIN)
    out = tmp_path / "out"
    first = subprocess.Popen(command(tmp_path, *FIRST), cwd=ROOT, env=environment(),
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_for_checkpoint(first, out)
        config_before = (out / "config.json").read_bytes()
        for case, flags, status, line in SECOND:
            second = subprocess.run(command(tmp_path, *flags), cwd=ROOT, env=environment(),
                                    capture_output=True, text=True, timeout=120)
            assert second.returncode == status, (case, second.stderr)
            if line is not None:
                assert second.stderr.count("\n") == 1 and line in second.stderr, (case, second.stderr)
                assert str(out) in second.stderr and "Traceback" not in second.stderr, case
        assert first.poll() is None, "the first sweep must still be running"
        # The refused sweeps wrote nothing: no record, and the first sweep's config file unchanged.
        assert not list(out.glob("records/*/*/*.json"))
        assert (out / "config.json").read_bytes() == config_before
        os.kill(first.pid, signal.SIGKILL)
    finally:
        if first.poll() is None:
            first.kill()  # this test's own sweep process, whatever happened above
        first.wait(timeout=60)
    assert first.returncode == -signal.SIGKILL

    after = subprocess.run(command(tmp_path, "--methods", "full", "--set", "train.steps=4"), cwd=ROOT,
                           env=environment(), capture_output=True, text=True, timeout=120)
    assert after.returncode == 0, after.stderr
    assert [p.relative_to(out).as_posix() for p in out.glob("records/*/*/*.json")] == [
        "records/tiny-majority/full/seed0.json"]
