"""kill -9 in the middle of a sweep, then the same command again: every run completes exactly
once, no record is partial, and the resumed run ends with the metrics of an uninterrupted one."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from harness.records import iter_record_paths, read_record

DRIVER = Path(__file__).with_name("sweep_driver.py")
ROOT = Path(__file__).resolve().parents[1]


def start(out: Path, log: Path) -> subprocess.Popen:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.Popen([sys.executable, str(DRIVER), str(out)], cwd=ROOT, env=env,
                            stdout=open(log, "w"), stderr=subprocess.STDOUT)


def metrics_by_key(out: Path) -> dict:
    found = {}
    for path in iter_record_paths(out):
        record = read_record(path)  # raises on any partial or damaged record
        m = record["metrics"]
        found[f"{record['method']}/seed{record['seed']}"] = (
            record["status"], m["val_accuracy"], m["test_accuracy"], m["best_step"],
            [(h["step"], h["train_loss"], h["val_accuracy"]) for h in m["history"]])
    return found


@pytest.mark.slow
def test_sigkill_mid_sweep_then_rerun_completes_each_run_once_with_identical_metrics(tmp_path):
    reference = tmp_path / "reference"
    assert subprocess.run([sys.executable, str(DRIVER), str(reference)], cwd=ROOT, capture_output=True,
                          timeout=600, env={**os.environ, "OMP_NUM_THREADS": "1"}).returncode == 0

    out = tmp_path / "killed"
    first = start(out, tmp_path / "first.log")
    # Kill once the first run is recorded and the second has written a mid-run checkpoint.
    deadline = time.time() + 300
    while time.time() < deadline and not list((out / "checkpoints").rglob("sdpa/seed0.pt")) and first.poll() is None:
        time.sleep(0.05)
    assert first.poll() is None, "the sweep finished before it could be killed; make it longer"
    first.send_signal(signal.SIGKILL)
    first.wait()
    assert len(list(iter_record_paths(out))) < 4  # it really was interrupted

    second = start(out, tmp_path / "second.log")
    assert second.wait(timeout=600) == 0
    logs = (tmp_path / "first.log").read_text() + (tmp_path / "second.log").read_text()
    for key in ("full/seed0", "full/seed1", "sdpa/seed0", "sdpa/seed1"):
        assert logs.count(f"tiny-majority/{key}: ok") == 1, key  # completed exactly once
    assert "tiny-majority/sdpa/seed0: resuming from its checkpoint at step" in logs
    assert metrics_by_key(out) == metrics_by_key(reference)
    assert not list(out.rglob("*.tmp")) and not list(out.rglob("*.pt"))
    assert json.loads((out / "config.json").read_text())["version"] == 1
