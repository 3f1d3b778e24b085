"""Report tables as pure functions of hand-built records (docs/records.md), no files, no plots.

Each case is small enough to check by hand: the numbers in the comments are worked out there.
"""

import math

import pytest

from harness.report.budget import budget_conflicts
from harness.report.efficiency_tables import efficiency_frame, efficiency_tables, sig2, time_cell
from harness.report.render import accuracy_tables

T_975_DF2 = 4.302652729911275  # Student t quantile, 97.5%, 2 degrees of freedom


def record(method, task, seed, accuracy, *, majority=None, shortcut=None, still_learning=None, macs=1000, macs_range=None,
           algorithmic=None, balanced=None, status="ok", config=None, match_macs=None, steps_per_second=10.0):
    metrics = {"test_accuracy": accuracy, "val_accuracy": accuracy, "steps_per_second": steps_per_second,
               "peak_memory_mb": 100.0, "train_seconds": 1.0, "tokens_per_second": 1.0, "history": []}
    if majority is not None:
        metrics["baselines"] = {"majority": majority, "chance": 0.1}
        if shortcut is not None:
            metrics["baselines"]["context_frequency"] = shortcut
    if still_learning is not None:
        metrics["still_learning"] = still_learning
    flops = {"attention_core_macs": macs, "attention_algorithmic_macs": algorithmic,
             "attention_balanced_macs": balanced}
    if macs_range:
        flops.update(attention_core_macs_min=macs_range[0], attention_core_macs_max=macs_range[1])
    config = {"train": {"steps": 100, "batch_size": 8}, "model": {"num_layers": 2}, **(config or {})}
    if match_macs:
        config["runtime"] = {"match_macs": match_macs}
    return {"method": method, "task": task, "seed": seed, "status": status, "metrics": metrics, "flops": flops,
            "config": config}


def test_majority_row_and_seeds_at_the_majority_baseline_counted_one_by_one():
    # Task "t": majority 0.50 in full's records, 0.52 in tree's -> mean over the task's records 51.00%.
    # full: 80, 81, 82: no seed at or below 51. tree: 50, 52, 54: one seed (50) at or below.
    # bimodal: 10, 99, 98: mean 69 with a half width of 4.30 x 50.8 / sqrt 3 = 126, an interval that
    # reaches 51 although two seeds are far above it: one seed is counted, not the interval.
    records = []
    for seed, (f, t, b) in enumerate([(0.80, 0.50, 0.10), (0.81, 0.52, 0.99), (0.82, 0.54, 0.98)]):
        records += [record("full", "t", seed, f, majority=0.50), record("tree", "t", seed, t, majority=0.52),
                    record("bimodal", "t", seed, b, majority=0.51)]
    table = accuracy_tables(records)
    assert table.accuracy.loc["majority", "t"] == "51.00"
    assert table.accuracy.loc["tree", "t"].startswith(f"52.00 ± {T_975_DF2 * 2 / math.sqrt(3):.2f}")
    assert table.accuracy.loc["tree", "t"].endswith("≤ majority 1/3")
    assert table.accuracy.loc["bimodal", "t"].endswith("≤ majority 1/3")
    assert "≤" not in table.accuracy.loc["full", "t"]
    assert "shortcut" not in table.accuracy.index  # no record carries a shortcut rule
    assert "n = 3 seeds per cell" in table.notes


def test_shortcut_row_and_seeds_at_the_shortcut_against_sdpa():
    # recall task "r": majority 13%, shortcut 33%; sdpa 99, 98, 97; tree 30, 40, 33: two seeds <= 33.
    # With no `full`, sdpa is the exact reference: tree - sdpa = -69, -58, -64 (mean -63.67, sd 5.51,
    # half width 4.3027 x 5.51 / sqrt 3 = 13.68).
    records = []
    for seed, (exact, tree) in enumerate([(0.99, 0.30), (0.98, 0.40), (0.97, 0.33)]):
        records += [record("sdpa", "r", seed, exact, majority=0.13, shortcut=0.33),
                    record("tree", "r", seed, tree, majority=0.13, shortcut=0.33)]
    table = accuracy_tables(records)
    assert table.accuracy.loc["shortcut", "r"] == "33.00"
    assert table.accuracy.loc["tree", "r"].endswith("↓ ≤ shortcut 2/3")
    assert "≤ shortcut" not in table.accuracy.loc["sdpa", "r"]
    assert "exact attention (`sdpa`)" in table.notes and "≤ shortcut k/n" in table.notes
    from harness.report.tables import significance_table

    row = significance_table(table.significance).set_index("method").loc["tree"]
    assert row["vs"] == "sdpa" and row["difference (points)"] == "-63.67"
    assert row["95% interval"] == f"[{-63.67 - 13.68:+.2f}, {-63.67 + 13.68:+.2f}]"


def test_missing_baselines_and_flags_are_said_not_invented():
    records = [record("full", "t", s, 0.3 + 0.01 * s) for s in range(2)]
    table = accuracy_tables(records)
    assert table.accuracy.loc["majority", "t"] == "—"
    assert "majority baseline is missing from the records of t (2 records)" in table.notes
    assert "Still-learning flag missing from 2 of 2 ok runs" in table.notes
    assert "≈" not in table.accuracy.loc["full", "t"] and "†" not in table.accuracy.loc["full", "t"]


def test_significance_marks_follow_the_paired_test():
    # mqar-like: tree - full = +10, +11, +12 on seeds 0..2: t = 11 / (1 / sqrt 3) = 19.05, p = 0.0027 -> ↑.
    # noisy: +10, -8, +1: mean 1, not significant -> no mark.
    records = []
    for seed, (f, up, noisy) in enumerate([(0.20, 0.30, 0.30), (0.21, 0.32, 0.13), (0.22, 0.34, 0.23)]):
        records += [record("full", "t", seed, f), record("up", "t", seed, up), record("noisy", "t", seed, noisy)]
    table = accuracy_tables(records)
    assert table.accuracy.loc["up", "t"].endswith("↑")
    assert "↑" not in table.accuracy.loc["noisy", "t"] and "↓" not in table.accuracy.loc["noisy", "t"]
    row = table.significance.set_index("method").loc["up"]
    assert row["statistic"] == pytest.approx(11 / (1 / math.sqrt(3)), rel=1e-9)
    assert row["test"] == "paired t" and row["p_value"] < 0.05
    assert "paired t-test by seed, two-sided, alpha 0.05" in table.notes


def test_still_learning_mark():
    records = [record("full", "t", 0, 0.5, still_learning=False), record("full", "t", 1, 0.6, still_learning=True)]
    table = accuracy_tables(records)
    assert table.accuracy.loc["full", "t"].endswith("†")
    assert "metrics.still_learning" in table.notes and "missing" not in table.notes.split("†")[1]


def test_macs_over_seeds_and_over_the_test_split():
    # tree: 3.0 M, 3.2 M, 3.4 M over seeds: mean 3.2 M, std 0.2 M; test-split range 2.5 M to 4.1 M;
    # full: the same on every seed and example.
    records = []
    for seed, macs in enumerate([3_000_000, 3_200_000, 3_400_000]):
        records.append(record("tree", "t", seed, 0.5, macs=macs, macs_range=(2_500_000 + seed, 4_100_000 - seed),
                              algorithmic=1_000_000, balanced=900_000))
        records.append(record("full", "t", seed, 0.5, macs=17_000_000, macs_range=(17_000_000, 17_000_000),
                              algorithmic=17_000_000))
    table = accuracy_tables(records)
    assert table.macs.loc["tree", "t"] == "3.2 M ± 200 k"
    assert table.macs.loc["full", "t"] == "17 M"
    detail = table.macs_detail.set_index("method")
    assert detail.loc["tree", "over the test split (min–max)"] == "2.5 M–4.1 M"
    assert detail.loc["full", "over the test split (min–max)"] == "same for every example"
    assert detail.loc["tree", "balanced-tree formula"] == "900 k" and detail.loc["full", "balanced-tree formula"] == "—"


def test_matched_macs_table():
    # Reference tf measured 1.0 M; linformer solved for target 1.0 M, measured 1.1 M -> 1.10 of both.
    records = []
    for seed in range(2):
        records.append(record("treeformer-tf", "t", seed, 0.40 + 0.02 * seed, macs=1_000_000))
        records.append(record("linformer-matched", "t", seed, 0.30, macs=1_100_000,
                              match_macs={"reference": "treeformer-tf", "target_macs": 1_000_000.0}))
    matched = accuracy_tables(records).matched.set_index("method")
    assert matched.loc["linformer-matched", "MACs / reference"] == "1.10"
    assert matched.loc["linformer-matched", "MACs / target"] == "1.10"
    assert matched.loc["treeformer-tf (reference)", "accuracy (%, ± 95% CI)"].startswith("41.00 ± ")
    # Paired by seed: 30 - 40 and 30 - 42, mean -11, sd sqrt(2), t(0.975, 1 df) = 12.706.
    assert matched.loc["linformer-matched", "difference to reference [95% CI]"] == "-11.00 [-23.71, +1.71] (paired t)"
    assert accuracy_tables([record("full", "t", 0, 0.5)]).matched is None


def test_efficiency_cells_two_digits_intervals_and_tree_labels():
    rows = [
        {"method": "sdpa", "seq_len": 1024, "scope": "core", "pass": "forward", "status": "ok", "time_ms": 5.912,
         "ratio_to_sdpa": 1.0, "ratio_to_sdpa_ci95": [1.0, 1.0], "ratio_to_full": 0.2437,
         "ratio_to_full_ci95": [0.2301, 0.2602], "peak_memory_mb": 2.06, "tree": None},
        {"method": "treeformer-tf", "seq_len": 1024, "scope": "core", "pass": "forward", "status": "ok",
         "time_ms": 6.81, "ratio_to_sdpa": 1.153, "ratio_to_sdpa_ci95": [0.9712, 1.349], "ratio_to_full": None,
         "ratio_to_full_ci95": None, "peak_memory_mb": 6.3, "tree": "balanced"},
        {"method": "treeformer-tf", "seq_len": 1024, "scope": "core", "pass": "forward", "status": "ok",
         "time_ms": 9.1, "ratio_to_sdpa": 1.54, "peak_memory_mb": 9.0, "tree": "random"},  # old row: no ci
    ]
    frame = efficiency_frame(rows)
    assert list(frame["label"]) == ["sdpa", "treeformer-tf (balanced tree)", "treeformer-tf (random tree)"]
    assert time_cell(frame.iloc[0]) == "5.9 (1.0x [1.0, 1.0], 0.24x [0.23, 0.26])"
    assert time_cell(frame.iloc[1]) == "6.8 (1.2x [0.97, 1.3], —)"  # no full row here: no ratio invented
    assert time_cell(frame.iloc[2]) == "9.1 (1.5x, —)"
    memory = efficiency_tables(frame)["core forward: peak memory MiB"]
    assert memory.loc["treeformer-tf (balanced tree)", 1024] == "6.3"
    assert [sig2(v) for v in (0.5, 1, 5408, 9.96, 0.0996)] == ["0.50", "1.0", "5400", "10", "0.10"]


def test_budget_conflicts_name_the_key_and_the_runs():
    same = {"train": {"steps": 300, "batch_size": 32}}
    records = [record("full", "t", 0, 0.5, config=same), record("tree", "t", 0, 0.5, config=same),
               record("tree", "t", 1, 0.5, config={"train": {"steps": 200, "batch_size": 32}}),
               record("full", "u", 0, 0.5, config={"train": {"steps": 50}})]  # another task may differ
    conflicts = budget_conflicts(records)
    assert len(conflicts) == 1
    assert conflicts[0].startswith("t: train.steps differs between runs: 300 (full/seed0, tree/seed0); 200 (tree/seed1)")
    assert budget_conflicts(records[:2]) == []


def test_efficiency_macs_table_shows_what_executed_against_full():
    """By hand: full and sdpa executed 1000 MACs at n=256, the balanced tree 40 (0.040x), the random
    tree 125 (0.13x); at n=512 full did not run, so the ratio is to sdpa's count (the same function)."""
    base = {"scope": "core", "pass": "forward", "status": "ok", "time_ms": 1.0, "ratio_to_sdpa": 1.0}
    rows = [
        {**base, "method": "full", "seq_len": 256, "macs": 1000, "tree": None},
        {**base, "method": "sdpa", "seq_len": 256, "macs": 1000, "tree": None},
        {**base, "method": "treeformer-tf", "seq_len": 256, "macs": 40, "tree": "balanced"},
        {**base, "method": "treeformer-tf", "seq_len": 256, "macs": 125, "tree": "random"},
        {**base, "method": "full", "seq_len": 512, "macs": None, "tree": None, "status": "oom"},
        {**base, "method": "sdpa", "seq_len": 512, "macs": 4000, "tree": None},
        {**base, "method": "treeformer-tf", "seq_len": 512, "macs": 100, "tree": "balanced"},
    ]
    macs = efficiency_tables(efficiency_frame(rows))["core forward: executed MACs (x full)"]
    assert macs.loc["treeformer-tf (balanced tree)", 256] == "40 (0.040x)"
    assert macs.loc["treeformer-tf (random tree)", 256] == "125 (0.12x)"
    assert macs.loc["treeformer-tf (balanced tree)", 512] == "100 (0.025x)"
    assert macs.loc["sdpa", 256] == "1 k (1.0x)"
    assert macs.loc["full", 512] == "OOM"
