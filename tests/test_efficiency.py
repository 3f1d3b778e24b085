"""The efficiency sweep's rows, failure statuses and memory probe (tiny shapes; no timed asserts)."""

import json

import pytest
import torch

from bench_common import BenchError
from harness.measure.efficiency import History, run_efficiency
from harness.measure.timing import peak_memory_mb
from methods import create_attention, register_attention
from methods.full import FullAttention

TINY = {"num_heads": 2, "head_dim": 8, "min_reps": 2, "max_reps": 2, "rep_budget_s": 0.0, "block_s": 0.0}
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
    assert broken["status"] == "error" and broken["reason"] == "ValueError: shape mismatch"
    assert cell(rows, "full", 32)["status"] == "ok"


def test_cpu_peak_memory_sees_tensor_allocations():
    extra_mb, _ = peak_memory_mb(lambda: torch.ones(1024, 1024), "cpu")  # 4 MiB, freed on return
    assert 4.0 <= extra_mb < 4.5
    n, heads = 512, 2
    core = create_attention("full", num_heads=heads, head_dim=8, max_seq_len=n).eval()
    q = torch.randn(1, heads, n, 8)
    with torch.no_grad():
        extra_mb, _ = peak_memory_mb(lambda: core(q, q, q), "cpu")
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
        ({"attention_options": {"performer": {}}}, "unknown option 'performer'"),
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
