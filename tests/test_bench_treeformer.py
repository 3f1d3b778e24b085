"""scripts/bench_treeformer.py: the step it times is the loop's step, targets read the paired ratios,
and too few repetitions for an interval are a usage error (no timing is asserted here)."""

import pytest
import torch

from script_support import loaded_script


@pytest.fixture(scope="module")
def bench():
    yield from loaded_script("bench_treeformer")


def test_too_few_repeats_is_a_usage_error(bench):
    with pytest.raises(SystemExit) as exit_info:
        bench.main(["--repeats", "3", "--no-step", "--lengths"])
    assert exit_info.value.code == 2


@pytest.mark.parametrize("name", ["treeformer-tf", "treeformer-tc"])
def test_training_step_updates_every_parameter_of_the_quick_model(bench, name):
    step = bench.TrainingStep(name, batch=2)
    before = {key: value.detach().clone() for key, value in step.model.named_parameters()}
    step()
    unchanged = [key for key, value in step.model.named_parameters() if torch.equal(value, before[key])]
    assert unchanged == []  # forward, backward and the AdamW update all ran
    assert step.inputs.shape == (2, bench.STEP_LENGTH) and bool((step.inputs > 0).all())  # no padding


def test_targets_compare_the_median_paired_ratio_with_each_bound(bench):
    def entry(method, ratio, seq_len=bench.STEP_LENGTH):
        return {"method": method, "seq_len": seq_len, "ratio_to_sdpa": ratio, "ratio_ci95": [ratio, ratio],
                "memory_ratio_to_sdpa": None, "extra_memory_mb": None}

    steps = [entry("sdpa", 1.0), entry("treeformer-tf", 1.7), entry("treeformer-tc", 1.1)]
    layers = [entry(bench.TC, 0.12, 4096)]
    met = {check["target"]: check["met"] for check in bench.targets(layers, steps)}
    assert met["treeformer-tf training step at n=128 <= 1.6x sdpa's"] is False
    assert met["treeformer-tc training step at n=128 <= 1.2x sdpa's"] is True
    assert met[f"{bench.TC} layer time at n=4096 <= 0.13x sdpa"] is True
    assert met[f"{bench.TC} layer time at n=8192 <= 0.07x sdpa"] is None  # not measured, not passed
