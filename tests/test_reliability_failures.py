"""Failures are rows: divergence, out-of-memory and time limits end one run with a status, keep
what was measured so far, and the sweep goes on to the next run (CLI exit status 1)."""

import pytest

from harness.cli import main
from harness.sweep.records import read_record, record_path
from reliability_support import FAULTY_PLUGIN, one_thread, write_plugin  # noqa: F401

pytestmark = pytest.mark.usefixtures("one_thread")


def sweep(tmp_path, fault, *sets):
    """`faulty-<fault>` then `full` in one CLI sweep; returns the exit status and both records."""
    plugin = write_plugin(tmp_path, "faulty_plugin", FAULTY_PLUGIN)
    out = tmp_path / "out"
    status = main(["run", "--suite", "tiny", "--methods", f"faulty-{fault},full", "--out", str(out), "--plugin", str(plugin),
                   "--data-dir", str(tmp_path / "data"), "--device", "cpu", "--set", "train.steps=20",
                   "--set", "train.eval_every=2", *sets])
    faulty, full = (read_record(record_path(out, "tiny-majority", m, 0)) for m in (f"faulty-{fault}", "full"))
    return status, faulty, full


def test_nan_output_is_diverged_at_its_step_and_the_sweep_goes_on(tmp_path, tiny_suite, restore_attention_registry,
                                                                   capsys):
    status, faulty, full = sweep(tmp_path, "nan")
    assert status == 1
    assert faulty["status"] == "diverged" and "at step 6" in faulty["reason"]
    metrics = faulty["metrics"]
    assert metrics["steps"] == 5 and [h["step"] for h in metrics["history"]] == [2, 4]  # measured so far
    assert metrics["val_accuracy"] is not None and metrics["best_step"] in (2, 4)
    assert full["status"] == "ok" and full["metrics"]["steps"] == 20  # the next run ran in full
    assert "2 runs in" in capsys.readouterr().out


@pytest.mark.parametrize("fault, message", [
    ("memory", "cannot allocate 12 GiB"),
    ("cuda-oom", "CUDA out of memory"),
    ("cpu-alloc", "DefaultCPUAllocator: can't allocate memory"),
])
def test_out_of_memory_is_oom_and_keeps_what_was_measured(tmp_path, tiny_suite, restore_attention_registry,
                                                          fault, message):
    status, faulty, full = sweep(tmp_path, fault)
    assert status == 1
    assert faulty["status"] == "oom" and "at step 6" in faulty["reason"] and message in faulty["reason"]
    metrics = faulty["metrics"]
    assert metrics["steps"] == 5 and [h["step"] for h in metrics["history"]] == [2, 4]
    assert metrics["val_accuracy"] is not None and metrics["peak_memory_mb"] > 0
    assert full["status"] == "ok"



def test_time_limit_is_timeout_and_keeps_what_was_measured(tmp_path, tiny_suite, restore_attention_registry):
    # Each training step sleeps 50 ms, so 1000 steps can never fit in 0.2 s; evaluating every
    # step guarantees something was measured before the limit is checked.
    status, faulty, full = sweep(tmp_path, "slow", "--set", "train.steps=1000", "--set", "train.eval_every=1",
                                 "--set", "train.time_limit_s=0.2")
    assert status == 1
    assert faulty["status"] == "timeout" and "time limit 0.2s" in faulty["reason"]
    metrics = faulty["metrics"]
    assert 1 <= metrics["steps"] < 1000 and len(metrics["history"]) == metrics["steps"]
    assert metrics["val_accuracy"] is not None and metrics["test_accuracy"] is not None
    assert faulty["flops"]["total_macs"] > 0
    assert full["status"] in ("ok", "timeout") and full["metrics"]["steps"] >= 1  # the sweep went on
