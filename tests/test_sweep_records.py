"""Records (schema, atomic writes, damage) and sweeps (resume, --force, failures as rows, versions)."""

import json

import pytest

from bench_common import BenchError
from harness.sweep import records, runner
from harness.sweep.executors import LocalExecutor
from harness.sweep.driver import SweepRequest, failed, resolve_specs, run_sweep

NAN_PLUGIN = '''
import torch
from methods import AttentionMethod, register_attention
from methods.full import FullAttention


@register_attention("nan-after-5")
class NaNAfter(FullAttention):
    """Full attention that returns NaN from its sixth training forward on (tests divergence)."""

    def __init__(self, num_heads=0, head_dim=0, max_seq_len=0):
        super().__init__()
        self.calls = 0

    def forward(self, q, k, v, key_padding_mask=None):
        if self.training:
            self.calls += 1
        out = super().forward(q, k, v, key_padding_mask)
        return out * float("nan") if self.calls > 5 else out
'''


def sweep(tmp_path, methods=("full", "sdpa"), sets=(), force=False, out=None, plugins=(), retry_failed=False):
    request = SweepRequest(suite="tiny", methods=list(methods), sets=["train.steps=10", "train.eval_every=5", *sets],
                           out=out or tmp_path / "out", data_dir=tmp_path / "data", plugins=list(plugins))
    specs = resolve_specs(request)
    return specs, run_sweep(specs, request.out, LocalExecutor(), force=force, retry_failed=retry_failed)


def test_sweep_writes_one_valid_record_per_run(tmp_path, tiny_suite):
    specs, done = sweep(tmp_path)
    assert [r["status"] for r in done] == ["ok", "ok"]
    for spec in specs:
        path = records.record_path(tmp_path / "out", spec.task, spec.method, spec.seed)
        record = records.read_record(path)
        assert set(records.RECORD_KEYS) <= set(record)
        assert record["config_hash"] == spec.config_hash and record["config"]["train"]["steps"] == 10
        assert 0 <= record["metrics"]["test_accuracy"] <= 1 and record["metrics"]["steps"] == 10
        assert record["env"]["versions"]["torch"] and record["env"]["git_commit"]
        assert record["suite"] == "tiny"
    summary = json.loads((tmp_path / "out" / "sweep.json").read_text())
    assert summary["runs"] == summary["ran"] == 2 and summary["statuses"] == {"ok": 2} and summary["wall_seconds"] > 0
    config_file = json.loads((tmp_path / "out" / "config.json").read_text())
    assert config_file["version"] == records.CONFIG_VERSION and set(config_file["runs"]) == {s.key for s in specs}
    assert not list((tmp_path / "out").rglob("*.pt"))  # finished runs leave no checkpoint behind


def test_sweep_resume_skips_done_runs_and_force_reruns(tmp_path, tiny_suite, monkeypatch):
    sweep(tmp_path)
    calls = []
    real = runner.execute_run
    monkeypatch.setattr(runner, "execute_run", lambda spec: calls.append(spec.key) or real(spec))
    _, again = sweep(tmp_path)
    assert calls == [] and [r["status"] for r in again] == ["ok", "ok"]
    with pytest.raises(BenchError, match="train.lr: 0.003 -> 0.002"):  # another config: refused
        sweep(tmp_path, sets=["train.lr=0.002"])
    assert calls == []
    sweep(tmp_path, sets=["train.lr=0.002"], force=True)
    assert len(calls) == 2


def test_a_diverging_plugin_method_is_a_row_and_the_sweep_goes_on(tmp_path, tiny_suite, restore_attention_registry):
    plugin = tmp_path / "nan_plugin.py"
    plugin.write_text(NAN_PLUGIN)
    from methods import load_plugin

    load_plugin(str(plugin))
    _, done = sweep(tmp_path, methods=("nan-after-5", "full"), plugins=[str(plugin)])
    assert [r["status"] for r in done] == ["diverged", "ok"]
    assert "step 6" in done[0]["reason"] and done[0]["metrics"]["steps"] == 5
    assert failed(done) == [done[0]]


def test_an_erroring_run_is_an_error_row(tmp_path, tiny_suite, restore_attention_registry):
    import torch
    from methods import AttentionMethod, register_attention

    @register_attention("broken-core")
    class Broken(AttentionMethod):
        def forward(self, q, k, v, key_padding_mask=None):
            raise ValueError("shape trouble")

        def macs(self, seq_len):
            return 0

    _, done = sweep(tmp_path, methods=("broken-core", "sdpa"))
    assert done[0]["status"] == "error" and "ValueError: shape trouble" in done[0]["reason"]
    assert done[1]["status"] == "ok" and torch.is_tensor(torch.zeros(1))


def test_unsupported_method_is_a_row_with_the_reason(tmp_path, tiny_suite, restore_attention_registry):
    from methods import Capabilities, register_attention
    from methods.full import FullAttention

    @register_attention("gpu-only-core")
    class GpuOnly(FullAttention):
        capabilities = Capabilities(cuda_only=True)

    _, done = sweep(tmp_path, methods=("gpu-only-core",))
    assert done[0]["status"] == "unsupported" and "needs a CUDA device" in done[0]["reason"]
    assert failed(done) == []


def test_output_dir_of_another_version_is_refused_and_untouched(tmp_path, tiny_suite):
    specs, _ = sweep(tmp_path)
    path = records.record_path(tmp_path / "out", specs[0].task, specs[0].method, specs[0].seed)
    old = json.loads(path.read_text())
    old["config"]["version"] = 0
    path.write_text(json.dumps(old))
    before = {p: p.read_bytes() for p in (tmp_path / "out").rglob("*") if p.is_file()}
    with pytest.raises(BenchError, match="config version 0"):
        sweep(tmp_path, force=True)
    assert before == {p: p.read_bytes() for p in (tmp_path / "out").rglob("*") if p.is_file()}


def test_atomic_write_leaves_the_old_record_when_writing_fails(tmp_path, monkeypatch):
    path = tmp_path / "r.json"
    records.write_json_atomic(path, {"a": 1})

    def explode(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(records.json, "dump", explode)
    with pytest.raises(OSError):
        records.write_json_atomic(path, {"a": 2})
    assert json.loads(path.read_text()) == {"a": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["r.json"]  # no temp file left


def test_record_schema_violations_are_one_line_errors(tmp_path):
    path = tmp_path / "seed0.json"
    path.write_text(json.dumps({"schema": 1, "status": "ok"}))
    with pytest.raises(BenchError, match="record lacks key"):
        records.read_record(path)
    path.write_text('{"schema": 1,')
    with pytest.raises(BenchError, match=r"seed0.json:1: malformed record JSON"):
        records.read_record(path)

