"""Baselines, learning curves and the convergence flag of a run record, against hand-made cases."""

import numpy as np
import pytest

from harness.config.layered import default_layer, finish
from harness.measure.baselines import class_baselines
from harness.sweep import records
from harness.sweep.driver import SweepRequest, resolve_specs, run_sweep
from harness.sweep.executors import LocalExecutor
from harness.training.metrics import still_learning
from harness.training.train_config import TrainConfig


def test_baselines_of_a_sequence_split():
    # 5 of 8 labels are class 2: majority 5/8; 4 classes: chance 1/4.
    assert class_baselines(np.array([2, 0, 2, 2, 1, 2, 2, 3]), num_classes=4) == {"majority": 0.625, "chance": 0.25}


def test_baselines_of_a_token_split_count_scored_positions_only():
    # Scored positions: 1, 1, 3 | 1, 0 -> class 1 holds 3 of 5. Counting the six -100s as a class
    # (or dividing by all 11 positions) gives 6/11 or 3/11: the mutations this test catches.
    targets = np.array([[-100, 1, 1, -100, 3, -100], [1, -100, 0, -100, -100, -100]])
    assert class_baselines(targets, num_classes=5) == {"majority": pytest.approx(3 / 5), "chance": 0.2}


def curve(*points):
    return [{"step": step, "train_loss": 1.0, "val_accuracy": accuracy} for step, accuracy in points]


def test_still_learning_compares_the_last_evaluation_with_the_window_start():
    # 100 steps: the window is steps 70..100; its start value is the evaluation at step 70.
    rising = curve((10, 0.1), (40, 0.2), (70, 0.30), (80, 0.31), (90, 0.32), (100, 0.33))
    assert still_learning(rising, 100) is True  # +3 points
    flat = curve((10, 0.1), (40, 0.2), (70, 0.30), (80, 0.33), (90, 0.35), (100, 0.31))
    assert still_learning(flat, 100) is False  # +1 point at the end, whatever happened inside
    # The start is the last evaluation at or before step 70 (here step 60), not the first one.
    uneven = curve((30, 0.0), (60, 0.40), (100, 0.41))
    assert still_learning(uneven, 100) is False
    exactly_two = curve((70, 0.50), (100, 0.52))
    assert still_learning(exactly_two, 100) is False  # "more than" 2 points


def test_still_learning_is_unknown_without_a_point_on_each_side_of_the_window():
    assert still_learning([], 100) is None
    assert still_learning(curve((80, 0.1), (100, 0.5)), 100) is None  # nothing at or before step 70
    assert still_learning(curve((10, 0.1), (70, 0.5)), 100) is None  # a run stopped early: no point after 70


def test_eval_every_defaults_to_ten_evaluations_and_shows_in_the_resolved_config():
    assert TrainConfig(steps=300).eval_every == 30
    assert TrainConfig(steps=7).eval_every == 1
    assert TrainConfig(steps=300, eval_every=7).eval_every == 7
    config = default_layer("cpu")
    assert config["train"]["eval_every"] is None  # the defaults leave it to the budget...
    config["train"]["steps"] = 250
    config["model"].update(vocab_size=8, num_classes=2, max_seq_len=16)
    assert finish(config)["train"]["eval_every"] == 25  # ...which the resolved config spells out


def test_quick_suite_runs_evaluate_at_least_ten_times(tmp_path):
    for spec in resolve_specs(SweepRequest(suite="quick", out=tmp_path, data_dir=tmp_path)):
        train = spec.config["train"]
        assert train["steps"] // train["eval_every"] >= 10, spec.key


def test_a_record_carries_baselines_still_learning_and_a_ten_point_curve(tmp_path, tiny_tasks):
    from harness.config.suites import SUITES, Suite, plain, register_suite

    register_suite(Suite(name="tiny-curve", description="tests", tasks=("tiny-copy",), methods=(plain("full"),),
                         family="lra", overrides={"train": {"eval_every": None, "steps": 20}}))
    try:
        request = SweepRequest(suite="tiny-curve", out=tmp_path / "out", data_dir=tmp_path / "data")
        (record,) = run_sweep(resolve_specs(request), request.out, LocalExecutor())
    finally:
        SUITES.remove("tiny-curve")
    metrics = record["metrics"]
    assert [point["step"] for point in metrics["history"]] == list(range(2, 21, 2))
    assert metrics["still_learning"] in (True, False)
    assert metrics["still_learning"] == still_learning(metrics["history"], metrics["steps"])
    split = tiny_tasks["tiny-copy"].prepare(tmp_path, {})["test"]
    assert metrics["baselines"] == class_baselines(split.targets, 4)
    records.validate_record(record, "record")
