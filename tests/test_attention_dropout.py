"""Attention dropout: the model's rate reaches the cores that declare it; the others say they ignore it."""

import math

import pytest
import torch
import torch.nn.functional as F

from harness.training.model import EncoderClassifier, ModelConfig
from methods import create_attention
from methods.registry import applies_attention_dropout

DROPPING = ("full", "sdpa", "linformer", "treeformer-tf", "treeformer-tc")


def qkv(n: int = 16, seed: int = 0):
    generator = torch.Generator().manual_seed(seed)
    return [torch.randn(2, 2, n, 8, generator=generator, dtype=torch.float64) for _ in range(3)]


def core(name: str, rate: float):
    options = {"height": 2} if name.startswith("treeformer") else {"k": 8} if name == "linformer" else {}
    return create_attention(name, num_heads=2, head_dim=8, max_seq_len=16, attention_dropout=rate, **options).double()


def test_full_drops_the_softmax_weights_as_an_independent_reference():
    """Reference: softmax(q k^T / sqrt d), dropped with the same RNG draw, times v. Catches dropout
    applied to the scores or the output instead of the weights, or a missing 1/(1-p) rescale."""
    q, k, v = qkv()
    attention = core("full", 0.5).train()
    torch.manual_seed(3)
    out = attention(q, k, v)
    torch.manual_seed(3)
    weights = torch.softmax(q @ k.transpose(-1, -2) / math.sqrt(8), dim=-1)
    expected = F.dropout(weights, 0.5, training=True) @ v
    assert torch.allclose(out, expected, atol=1e-12, rtol=0)


@pytest.mark.parametrize("name", DROPPING)
def test_dropping_cores_drop_in_training_only(name):
    q, k, v = qkv()
    assert applies_attention_dropout(name)
    plain = core(name, 0.0).eval()
    dropping = core(name, 0.5)
    dropping.load_state_dict(plain.state_dict())  # same tree / projections
    assert dropping.attention_dropout == 0.5
    assert torch.allclose(dropping.eval()(q, k, v), plain(q, k, v), atol=1e-12)  # eval: untouched
    torch.manual_seed(0)
    assert not torch.allclose(dropping.train()(q, k, v), plain(q, k, v), atol=1e-3)  # training: dropped


def test_performer_declares_no_attention_dropout_and_ignores_the_rate():
    """FAVOR+ forms no attention weights; the rate is not applied (and the record says so)."""
    q, k, v = qkv()
    assert not applies_attention_dropout("performer")
    torch.manual_seed(0)
    performer = core("performer", 0.5).train()
    performer.redraw_interval = 0
    assert performer.attention_dropout == 0.0
    assert torch.allclose(performer(q, k, v), performer(q, k, v), atol=1e-12)


def test_the_model_passes_its_rate_and_the_record_says_where_it_was_not_applied():
    from harness.sweep.runner import _diagnostics

    config = ModelConfig(vocab_size=8, max_seq_len=16, emb_dim=16, qkv_dim=16, mlp_dim=16, num_layers=2,
                         attention="full", attention_dropout=0.2, layer_attention={1: {"name": "performer"}})
    model = EncoderClassifier(config)
    assert [c.attention_dropout for c in model.attention_cores()] == [0.2, 0.0]
    assert _diagnostics(model)["attention_dropout"] == {"rate": 0.2, "applied": False, "not_applied_by": ["performer"]}
    model.set_attention([1], "sdpa")  # a bootstrap swap keeps the rate
    assert model.attention_cores()[1].attention_dropout == 0.2
    assert _diagnostics(model)["attention_dropout"] == {"rate": 0.2, "applied": True, "not_applied_by": []}


def test_rates_outside_zero_one_are_refused():
    from bench_common import BenchError

    with pytest.raises(BenchError, match=r"model.attention_dropout must be in \[0, 1\), got 1.0"):
        ModelConfig(attention_dropout=1.0)
    with pytest.raises(BenchError, match=r"attention_dropout must be a number in \[0, 1\)"):
        create_attention("full", num_heads=1, head_dim=4, max_seq_len=4, attention_dropout=-0.1)
