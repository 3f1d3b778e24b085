"""Two sweeps on one output folder: the second is refused with one line while the first runs, and
the folder is free again the moment the first one dies (kill -9 included).

Real processes through the real CLI (tests/reliability_driver.py): the first sweep trains a run
that sleeps in every step, so it is still training while the second ones start.
"""

import os
import signal
from pathlib import Path

import pytest

from reliability_support import (FAULTY_PLUGIN, checkpoints, driver_process, run_driver, sweep_command, wait_for,
                                 write_plugin)


def command(tmp_path: Path, *extra: str) -> list[str]:
    return sweep_command(tmp_path / "out", tmp_path / "data", "--seeds", "0", "--plugin", str(tmp_path / "faulty.py"),
                         "--set", "train.eval_every=2", *extra)


FIRST = ("--methods", "faulty-slow", "--set", "train.steps=100000")
# (id, flags of the second sweep, its exit status, a part of its one stderr line or None)
SECOND = [
    ("other-config-same-run", ("--methods", "faulty-slow", "--set", "train.steps=4"), 2, "is in use by another sweep"),
    ("other-run-same-folder", ("--methods", "full", "--set", "train.steps=4"), 2, "is in use by another sweep"),
    ("same-command", FIRST, 2, "is in use by another sweep"),
    ("dry-run-reads-only", (*FIRST, "--dry-run"), 0, None),
]


@pytest.mark.slow
def test_second_sweep_on_a_busy_folder_is_refused_and_the_lock_dies_with_its_holder(tmp_path):
    write_plugin(tmp_path, "faulty", FAULTY_PLUGIN)
    out = tmp_path / "out"
    with driver_process(command(tmp_path, *FIRST), tmp_path) as first:
        wait_for(first, lambda: checkpoints(out), "a checkpoint of the first sweep", 120)
        config_before = (out / "config.json").read_bytes()
        for case, flags, status, line in SECOND:
            second = run_driver(command(tmp_path, *flags), timeout_s=120)
            assert second.returncode == status, (case, second.stderr)
            if line is not None:
                assert second.stderr.count("\n") == 1 and line in second.stderr, (case, second.stderr)
                assert str(out) in second.stderr and "Traceback" not in second.stderr, case
        assert first.poll() is None, "the first sweep must still be running"
        # The refused sweeps wrote nothing: no record, and the first sweep's config file unchanged.
        assert not list(out.glob("records/*/*/*.json"))
        assert (out / "config.json").read_bytes() == config_before
        os.kill(first.pid, signal.SIGKILL)
    assert first.returncode == -signal.SIGKILL

    after = run_driver(command(tmp_path, "--methods", "full", "--set", "train.steps=4"), timeout_s=120)
    assert after.returncode == 0, after.stderr
    assert [p.relative_to(out).as_posix() for p in out.glob("records/*/*/*.json")] == [
        "records/tiny-majority/full/seed0.json"]
