"""scripts/bench_compile.py: the step it times goes through the swappable `net`, the break-even
arithmetic, and too few repetitions for an interval are a usage error (no timing is
asserted here; compiling itself is covered by tests/test_compile.py)."""

import pytest
import torch

from script_support import loaded_script


@pytest.fixture(scope="module")
def bench():
    yield from loaded_script("bench_compile")


def test_too_few_repeats_is_a_usage_error(bench):
    with pytest.raises(SystemExit) as exit_info:
        bench.main(["--repeats", "3"])
    assert exit_info.value.code == 2


def test_a_step_calls_its_net_so_the_compiled_copy_is_what_runs(bench):
    """The benchmark swaps `net` for the compiled module; a step must go through it, not `model`."""
    step = bench.SHAPES["training step n=128"]("sdpa")
    calls = []
    step.net = lambda inputs: calls.append(inputs.shape) or step.model(inputs)
    step()
    assert calls == [step.inputs.shape]


def test_break_even_and_net_saving_follow_the_paired_ratio(bench):
    result = bench.Result("sdpa", "training step n=128", cold_compile_s=60.0, warm_compile_s=20.0,
                          eager_ms=[100.0, 110.0, 90.0], compiled_ms=[50.0, 55.0, 45.0], ratios=[0.5, 0.5, 0.5])
    entry = bench.summarise(result)
    assert entry["ratio"] == 0.5 and (entry["eager_ms"], entry["compiled_ms"]) == (100.0, 50.0)
    assert entry["break_even_steps"] == pytest.approx(400.0)  # 20 s / (100 ms x (1 - 0.5)) saved per step
    assert entry["net_saving_s"] == pytest.approx(bench.QUICK_RUN_STEPS * 0.05 - 20.0)
    assert entry["eager_ms_each"] == [100.0, 110.0, 90.0]  # the raw times stay in the row
    # Unpaired medians would say compiled is faster (95 < 100); the paired ratio says slower: it decides.
    slower = bench.summarise(bench.Result("sdpa", "x", 1.0, 1.0, [100.0, 80.0, 120.0], [95.0, 96.0, 130.0],
                                          [0.95, 1.2, 1.08]))
    assert slower["break_even_steps"] is None and slower["net_saving_s"] < 0
    assert "| never |" in bench.compile_report({"env": _env(), "steps_per_run": 400, "rows": [slower]})


def test_an_error_becomes_a_row(bench):
    entry = bench.summarise(bench.Result("nope", "x", status="error", reason="KeyError: 'nope'"))
    assert entry["status"] == "error" and entry["ratio"] is None
    assert "error: KeyError" in bench.compile_report({"env": _env(), "steps_per_run": 400, "rows": [entry]})


def _env() -> dict:
    return {"machine": "m", "threads": 1, "versions": {"torch": "t"}, "git_commit": "c", "date_utc": "d",
            "load_average": [0.0, 0.0, 0.0], "load_average_end": [0.0, 0.0, 0.0], "command": "python x"}


def test_the_layer_step_runs_forward_and_backward(bench):
    step = bench.LayerStep("sdpa", seq_len=64)
    step()
    assert step.x.grad is not None and all(p.grad is not None for p in step.model.parameters())
