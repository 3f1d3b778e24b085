"""The efficiency sweep's rows, failure statuses and memory probe (tiny shapes; no timed asserts)."""

import json

import pytest
import torch

from bench_common import BenchError
from harness.measure.efficiency import run_efficiency
from harness.measure.efficiency_limits import History
from harness.measure.efficiency_options import TimedMethod
from harness.measure.balanced_tree import balance_through_medians
from harness.measure.timing import extra_memory_mb, paired_ratio
from methods import create_attention, register_attention
from methods.full import FullAttention

TINY = {"num_heads": 2, "head_dim": 8, "min_reps": 2, "long_min_reps": 2, "max_reps": 2, "rep_budget_s": 0.0, "block_s": 0.0}
ROW_KEYS = {"method", "seq_len", "scope", "pass", "status", "time_ms", "ratio_to_sdpa", "peak_memory_mb", "macs", "reason"}


def sweep(tmp_path, methods, seq_lens, **options):
    path = run_efficiency(methods, seq_lens, tmp_path / "out", "cpu", [], {**TINY, **options})
    assert path == tmp_path / "out" / "efficiency.json"
    return json.loads(path.read_text())


def cell(rows, method, seq_len, scope="core", pass_="forward"):
    (row,) = [r for r in rows if (r["method"], r["seq_len"], r["scope"], r["pass"]) == (method, seq_len, scope, pass_)]
    return row


def test_sweep_rows_cover_the_grid_with_macs_and_ratios(tmp_path):
    result = sweep(tmp_path, ["full", "linformer", "xformers"], [32, 64])
    rows = result["rows"]
    assert set(result["env"]) >= {"versions", "device", "machine", "git_commit", "command"}
    # sdpa joins as the baseline; every (method, length, scope, pass) has exactly one row
    assert len(rows) == 4 * 2 * 2 * 2
    for row in rows:
        assert ROW_KEYS <= set(row)
    for n in (32, 64):
        for scope in ("core", "layer"):
            for pass_ in ("forward", "forward_backward"):
                assert cell(rows, "sdpa", n, scope, pass_)["ratio_to_sdpa"] == 1.0
                full = cell(rows, "full", n, scope, pass_)
                assert full["status"] == "ok" and full["time_ms"] > 0 and full["ratio_to_sdpa"] > 0
                assert full["peak_memory_mb"] > 0
                linformer = cell(rows, "linformer", n, scope, pass_)
                assert linformer["status"] == "ok", linformer["reason"]  # max_seq_len = n: supported
                xformers = cell(rows, "xformers", n, scope, pass_)
                assert xformers["status"] == "unsupported" and "CUDA" in xformers["reason"]
        core_macs = create_attention("full", num_heads=2, head_dim=8, max_seq_len=n).macs(n)
        assert cell(rows, "full", n)["macs"] == core_macs
        assert cell(rows, "full", n, "layer")["macs"] == core_macs + 4 * n * 16 * 16  # width 2 x 8


def test_thread_count_applies_to_the_sweep_only(tmp_path):
    before = torch.get_num_threads()
    result = sweep(tmp_path, ["full"], [16], num_threads=1, scopes=["core"], passes=["forward"])
    assert result["settings"]["num_threads"] == 1 and "1 threads" in result["env"]["device"]
    assert torch.get_num_threads() == before


def test_budget_overrun_is_a_timeout_and_stops_the_method(tmp_path):
    rows = sweep(tmp_path, ["full"], [16, 32], cell_budget_s=1e-9, scopes=["core"], passes=["forward"])["rows"]
    first, second = cell(rows, "full", 16), cell(rows, "full", 32)
    assert first["status"] == "timeout" and "cell budget" in first["reason"]
    assert second["status"] == "timeout" and second["reason"].startswith("skipped")
    assert first["time_ms"] is None


def test_memory_extrapolated_over_the_limit_is_recorded_as_oom_without_running(tmp_path):
    rows = sweep(tmp_path, ["full"], [16, 32], memory_limit_mb=1e-6, scopes=["core"], passes=["forward"])["rows"]
    assert cell(rows, "full", 16)["status"] == "ok"  # nothing to extrapolate from yet
    second = cell(rows, "full", 32)
    assert second["status"] == "oom" and "memory limit" in second["reason"]
    assert second["peak_memory_mb"] is None


def test_failing_methods_become_rows_and_the_sweep_goes_on(tmp_path, restore_attention_registry):
    @register_attention("test-alloc-fails")
    class AllocFails(FullAttention):
        def forward(self, q, k, v, key_padding_mask=None):
            raise RuntimeError("[enforce fail at alloc_cpu.cpp:117] DefaultCPUAllocator: can't allocate memory")

    @register_attention("test-broken")
    class Broken(FullAttention):
        def forward(self, q, k, v, key_padding_mask=None):
            raise ValueError("shape\nmismatch")

    rows = sweep(tmp_path, ["test-alloc-fails", "test-broken", "full"], [16, 32], scopes=["core"], passes=["forward"])["rows"]
    assert cell(rows, "test-alloc-fails", 16)["status"] == "oom"
    assert cell(rows, "test-alloc-fails", 32)["reason"].startswith("skipped: out of memory")
    broken = cell(rows, "test-broken", 32)
    assert broken["status"] == "error" and broken["reason"].startswith("ValueError: shape mismatch (at ")
    assert cell(rows, "full", 32)["status"] == "ok"


def test_cpu_peak_memory_sees_tensor_allocations():
    extra_mb, _ = extra_memory_mb(lambda: torch.ones(1024, 1024), "cpu")  # 4 MiB, freed on return
    assert 4.0 <= extra_mb < 4.5
    n, heads = 512, 2
    core = create_attention("full", num_heads=heads, head_dim=8, max_seq_len=n).eval()
    q = torch.randn(1, heads, n, 8)
    with torch.no_grad():
        extra_mb, _ = extra_memory_mb(lambda: core(q, q, q), "cpu")
    scores_mb = heads * n * n * 4 / 2**20
    assert extra_mb >= 2 * scores_mb  # scores and their softmax are alive together


@pytest.mark.parametrize(
    "options, message",
    [
        ({"num_head": 2}, "unknown option 'num_head'"),
        ({"min_reps": "3"}, "expected int"),
        ({"scopes": ["everything"]}, "'scopes'"),
        ({"dtype": "float64"}, "'dtype'"),
        ({"num_threads": 0}, "'num_threads'"),
    ],
)
def test_bad_options_are_one_line_errors(tmp_path, options, message):
    with pytest.raises(BenchError, match=message):
        run_efficiency(["full"], [16], tmp_path, "cpu", [], options)


def test_unknown_method_fails_before_running(tmp_path):
    with pytest.raises(BenchError, match="unknown attention method 'fulll'"):
        run_efficiency(["fulll"], [16], tmp_path, "cpu", [], {})
    assert not (tmp_path / "efficiency.json").exists()


def test_extrapolation_is_linear_to_quadratic():
    history = History(points=[(100, 1.0, 10.0)])
    assert history.extrapolate(200, column=1) == pytest.approx(4.0)  # one point: worst case
    history.points.append((200, 2.0, 10.0))
    assert history.extrapolate(400, column=1) == pytest.approx(4.0)  # measured linear growth
    assert history.extrapolate(400, column=2) == pytest.approx(20.0)  # flat memory clamps to linear


# --------------------------------------------------------------------------- paired ratios


def test_paired_ratio_is_the_geometric_mean_with_a_t_interval_of_log_ratios():
    # Per-repetition ratios 1, 2, 8: log2 = 0, 1, 3. Worked by hand: geometric mean 2^(4/3);
    # sd of the logs sqrt(7/3) ln 2, t(0.975, 2 df) = 4.302652729911275, half-width t*sd/sqrt(3).
    # A median of ratios (2), an arithmetic mean (3.67) or a quotient of medians (2/1) all fail.
    ratio, (low, high) = paired_ratio([1.0, 2.0, 8.0], [1.0, 1.0, 1.0])
    assert ratio == pytest.approx(2.519842099789746, rel=1e-12)
    assert (low, high) == (pytest.approx(0.18158919917532246, rel=1e-9), pytest.approx(34.96686056609744, rel=1e-9))


def test_paired_ratio_pairs_repetitions_by_index():
    # Load that doubles both timings of a repetition cancels in its ratio: exactly 2, no spread.
    # Unpaired (e.g. median / median, or any shuffled pairing) would see the load as spread.
    ratio, interval = paired_ratio([2.0, 4.0, 8.0, 16.0], [1.0, 2.0, 4.0, 8.0])
    assert ratio == pytest.approx(2.0, rel=1e-12) and interval == (pytest.approx(2.0), pytest.approx(2.0))
    assert paired_ratio([3.0], [1.5]) == (pytest.approx(2.0), None)  # one pair: no interval


def test_repetitions_stop_at_the_target_interval_or_are_marked_time_capped(tmp_path):
    reached = sweep(tmp_path / "a", ["full"], [16], scopes=["core"], passes=["forward"], min_reps=3, max_reps=40,
                    rep_budget_s=600.0, ci_target=100.0)["rows"]
    row = cell(reached, "full", 16)
    assert row["reps"] == 3 and row["time_capped"] is False  # any interval is within +-10000%
    low, high = row["ratio_to_sdpa_ci95"]
    assert low <= row["ratio_to_sdpa"] <= high
    assert cell(reached, "sdpa", 16)["ratio_to_sdpa_ci95"] == [1.0, 1.0]
    assert row["ratio_to_full"] == 1.0 and cell(reached, "sdpa", 16)["ratio_to_full"] > 0
    capped = sweep(tmp_path / "b", ["full"], [16], scopes=["core"], passes=["forward"], min_reps=2, max_reps=4,
                   rep_budget_s=600.0, ci_target=1e-12)["rows"]
    assert cell(capped, "full", 16)["reps"] == 4 and cell(capped, "full", 16)["time_capped"] is True


# --------------------------------------------------------------------------- executed MACs and trees


@pytest.mark.parametrize("scope,pass_", [("core", "forward"), ("layer", "forward"), ("layer", "forward_backward")])
def test_tree_methods_are_timed_with_a_random_and_a_balanced_tree(tmp_path, scope, pass_):
    n, height = 256, 3
    tf = TimedMethod.of("treeformer-tf", options={"height": height})
    rows = sweep(tmp_path, [tf], [n], scopes=[scope], passes=[pass_])["rows"]
    tf_rows = {r["tree"]: r for r in rows if r["method"] == "treeformer-tf"}
    assert set(tf_rows) == {"random", "balanced"} and cell(rows, "full", n, scope, pass_)["tree"] is None
    projections = 4 * n * 16 * 16 if scope == "layer" else 0
    formula = create_attention("treeformer-tf", num_heads=2, head_dim=8, max_seq_len=n, height=height).macs(n)
    # The balanced tree executes exactly the balanced-tree formula (n/2^h = 32 per leaf, a power
    # of two); the random one executes what its leaves cost, not the formula.
    assert tf_rows["balanced"]["macs"] == formula + projections
    assert tf_rows["random"]["macs"] != formula + projections


def test_balancing_puts_equal_numbers_of_tokens_in_every_leaf():
    torch.manual_seed(3)
    core = create_attention("treeformer-tf", num_heads=2, head_dim=8, max_seq_len=512, height=4)
    tokens = torch.randn(1, 2, 512, 8) * torch.linspace(0.1, 3.0, 8)  # anisotropic: a random tree is unbalanced
    before = core.tree.route(tokens, None).leaf
    assert any(torch.bincount(before[0, h], minlength=16).max() > 32 for h in range(2))
    balance_through_medians(core.tree, tokens)
    after = core.tree.route(tokens, None).leaf  # the core's own routing, not the balancing code's
    for head in range(2):
        assert torch.bincount(after[0, head], minlength=16).tolist() == [32] * 16


# --------------------------------------------------------------------------- limits and progress


def test_a_huge_first_length_is_predicted_from_probes_not_run(tmp_path, capsys):
    rows = sweep(tmp_path, ["full"], [1_000_000], scopes=["core"], passes=["forward"])["rows"]
    for method in ("sdpa", "full"):
        row = cell(rows, method, 1_000_000)
        assert row["status"] in ("timeout", "oom") and "extrapolated" in row["reason"], row
    err = capsys.readouterr().err
    assert "probing full at n=256 to predict n=1000000" in err and "efficiency n=1000000 core forward" in err


def test_long_lengths_get_at_least_long_min_reps_paired_repetitions(tmp_path):
    # A target any interval meets and no time budget: short cells stop at min_reps (2), the long
    # ones (>= long_len) only at long_min_reps (5). Every method is paired with every other.
    rows = sweep(tmp_path, ["linformer", "performer"], [16, 32], scopes=["core"], passes=["forward"],
                 ci_target=1e6, max_reps=8, long_len=32, long_min_reps=5)["rows"]
    assert {r["reps"] for r in rows if r["seq_len"] == 16} == {2}
    assert {r["reps"] for r in rows if r["seq_len"] == 32} == {5}
    for row in rows:
        others = {r["method"] for r in rows if r["seq_len"] == row["seq_len"]} - {row["method"]}
        assert set(row["paired"]) == others
        low, high = row["paired"]["sdpa" if row["method"] != "sdpa" else "full"]["ci95"]
        assert low <= row["paired"]["sdpa" if row["method"] != "sdpa" else "full"]["ratio"] <= high
