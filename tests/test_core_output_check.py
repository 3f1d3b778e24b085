"""The model checks each attention core's first output (shape, dtype, finiteness), so a plugin that
returns (B, n, H, d) instead of (B, H, n, d) fails its run with one line instead of training 'ok'."""

import json

import pytest
import torch

from harness.training import model as model_module
from harness.training.model import EncoderClassifier, ModelConfig
from methods import register_attention
from methods.full import FullAttention
from test_sweep_records import sweep

# Each bad core: what its forward returns instead of full attention's (B, H, n, d) output, and what
# the one-line reason must say. With the check removed, "transposed" trains 'ok' (tiny task: n=16,
# H=2, d=8, so the reshape after it still fits) and the others fail with an opaque torch message.
BAD_OUTPUTS = {
    "transposed": (lambda out: out.transpose(1, 2), "returned shape (16, 16, 2, 8), expected (16, 2, 16, 8)"),
    "short": (lambda out: out[..., :-1], "returned shape (16, 2, 16, 7), expected (16, 2, 16, 8)"),
    "tuple": (lambda out: (out, None), "returned a tuple, expected a tensor of shape (16, 2, 16, 8)"),
    "double": (lambda out: out.double(), "returned dtype torch.float64, expected torch.float32"),
    "nan": (lambda out: out * float("nan"), "returned non-finite values on its first batch"),
}


def register_bad(kind):
    change = BAD_OUTPUTS[kind][0]

    @register_attention(f"bad-{kind}")
    class Bad(FullAttention):
        def forward(self, q, k, v, key_padding_mask=None):
            return change(super().forward(q, k, v, key_padding_mask))


@pytest.mark.parametrize("kind", list(BAD_OUTPUTS))
def test_a_bad_core_output_fails_its_run_with_one_line(tmp_path, tiny_suite, restore_attention_registry, kind):
    register_bad(kind)
    _, done = sweep(tmp_path, methods=(f"bad-{kind}", "full"))
    bad, good = done
    assert bad["status"] == "error" and good["status"] == "ok"
    assert f"attention method 'bad-{kind}' {BAD_OUTPUTS[kind][1]}" in bad["reason"]
    assert bad["metrics"]["steps"] is None  # failed before a step finished


def test_the_check_runs_once_per_core(monkeypatch):
    seen = []
    real = model_module.check_core_output
    monkeypatch.setattr(model_module, "check_core_output", lambda core, out, v: seen.append(core) or real(core, out, v))
    model = EncoderClassifier(ModelConfig(vocab_size=4, max_seq_len=8, emb_dim=8, qkv_dim=8, mlp_dim=8, num_layers=2))
    tokens = torch.randint(1, 4, (2, 8))
    for _ in range(3):
        model(tokens)
    assert seen == model.attention_cores()  # each of the two cores once, not once per call
    model.set_attention([1], "sdpa")
    model(tokens)
    model(tokens)
    assert len(seen) == 3 and seen[-1] is model.attention_cores()[1]  # a swapped-in core is checked again


@pytest.mark.parametrize("scope", ["layer", "core"])
def test_efficiency_gets_the_check_in_both_scopes(tmp_path, restore_attention_registry, scope):
    from harness.measure.efficiency import run_efficiency

    register_bad("transposed")
    options = {"num_heads": 2, "head_dim": 8, "min_reps": 1, "max_reps": 1, "rep_budget_s": 0.0, "block_s": 0.0,
               "scopes": [scope], "passes": ["forward", "forward_backward"]}
    path = run_efficiency(["bad-transposed"], [16], tmp_path, "cpu", [], options)
    rows = [r for r in json.loads(path.read_text())["rows"] if r["method"] == "bad-transposed"]
    assert len(rows) == 2
    for row in rows:
        assert row["status"] == "error" and row["time_ms"] is None
        assert "attention method 'bad-transposed' returned shape (1, 16, 2, 8), expected (1, 2, 16, 8)" in row["reason"]
