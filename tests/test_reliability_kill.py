"""Kill -9 in the middle of a real sweep, rerun the same command: every run completes exactly once.

The sweep runs in a subprocess through the real CLI (tests/reliability_driver.py adds only the
tiny test tasks). It is killed with SIGKILL once one record is written and another run is in
training with a checkpoint on disk; the rerun must leave finished records untouched, resume the
interrupted run from its checkpoint, and end it with the metrics of an uninterrupted run.
"""

import os
import signal
from pathlib import Path
from typing import Optional

import pytest

from harness.training.checkpoints import load_checkpoint
from harness.sweep.records import iter_record_paths, read_record
from reliability_support import checkpoints, driver_process, run_driver, sweep_command, wait_for

SEEDS = (0, 1, 2)
STEPS = 60
# Timings and peak memory depend on the machine's load, everything else must match exactly.
MEASURED = {"train_seconds", "steps_per_second", "tokens_per_second", "peak_memory_mb"}


def command(out: Path, data: Path, seeds=SEEDS) -> list[str]:
    return sweep_command(out, data, "--methods", "full", "--seeds", ",".join(map(str, seeds)),
                         "--set", f"train.steps={STEPS}", "--set", "train.eval_every=10", "--set", "model.dropout=0.1")


def a_run_in_training(out: Path) -> Optional[Path]:
    """The checkpoint of a run in training, once another run has its record; None before."""
    done = {p.stem for p in iter_record_paths(out)}
    pending = [c for c in checkpoints(out) if c.stem not in done]
    return pending[0] if done and pending else None


def snapshot(paths) -> dict[Path, tuple[bytes, int]]:
    return {p: (p.read_bytes(), p.stat().st_mtime_ns) for p in paths}


def comparable(record: dict) -> dict:
    metrics = {k: v for k, v in record["metrics"].items() if k not in MEASURED}
    return {"metrics": metrics, "flops": record["flops"], "diagnostics": record["diagnostics"],
            "status": record["status"], "config_hash": record["config_hash"]}


@pytest.mark.slow
def test_sigkill_mid_sweep_then_rerun_completes_each_run_once(tmp_path):
    out, data = tmp_path / "out", tmp_path / "data"
    logs = tmp_path / "first"
    logs.mkdir()
    with driver_process(command(out, data), logs) as proc:
        interrupted = wait_for(proc, lambda: a_run_in_training(out), "a record and another run's checkpoint", 240)
        os.kill(proc.pid, signal.SIGKILL)
    assert proc.returncode == -signal.SIGKILL

    finished = snapshot(iter_record_paths(out))
    assert finished and len(finished) < len(SEEDS)
    saved_step = load_checkpoint(interrupted)["step"]
    assert 0 < saved_step < STEPS

    rerun = run_driver(command(out, data), timeout_s=300)
    assert rerun.returncode == 0, rerun.stderr
    # The rerun ran only the missing runs, and resumed the interrupted one where it stopped.
    assert f"{len(finished)} of {len(SEEDS)} runs already done" in rerun.stderr
    assert len([line for line in rerun.stdout.splitlines() if line.startswith("[")]) == len(SEEDS) - len(finished)
    resumed_lines = [line for line in rerun.stderr.splitlines() if line.startswith("resumed ")]
    assert resumed_lines == [f"resumed {interrupted} at step {saved_step}"]

    paths = list(iter_record_paths(out))
    assert sorted(p.stem for p in paths) == [f"seed{s}" for s in SEEDS]  # each run once, nothing else
    assert snapshot(finished) == finished  # finished records neither rewritten nor touched
    for path in paths:
        record = read_record(path)  # parses and passes the schema checks
        assert record["status"] == "ok" and record["metrics"]["steps"] == STEPS
        assert record["metrics"]["test_accuracy"] is not None and record["flops"]["total_macs"] > 0
        assert [h["step"] for h in record["metrics"]["history"]] == list(range(10, STEPS + 1, 10))
    assert checkpoints(out) == []  # finished runs leave no checkpoint behind

    # The resumed run ends exactly as the same run does uninterrupted.
    seed = int(interrupted.stem.removeprefix("seed"))
    reference = run_driver(command(tmp_path / "reference", data, seeds=(seed,)), timeout_s=300)
    assert reference.returncode == 0, reference.stderr
    [reference_path] = iter_record_paths(tmp_path / "reference")
    resumed_path = next(p for p in paths if p.stem == interrupted.stem)
    assert comparable(read_record(resumed_path)) == comparable(read_record(reference_path))
