"""model.short_conv: a depthwise convolution before each attention layer, neutral to padding and
to the identity of configs that leave it off."""

import json
from pathlib import Path

import pytest
import torch

from bench_common import BenchError
from harness.config import layered as cfg
from harness.training.model import EncoderClassifier, ModelConfig

RESULTS = Path(__file__).resolve().parents[1] / "results"


def small(**changes) -> ModelConfig:
    base = dict(vocab_size=12, num_classes=3, max_seq_len=16, emb_dim=8, qkv_dim=8, mlp_dim=16, num_layers=2,
                num_heads=2, dropout=0.0, head="token", attention="full", short_conv=3)
    return ModelConfig(**{**base, **changes})


def test_the_convolution_mixes_neighbours_only():
    torch.manual_seed(0)
    model = EncoderClassifier(small(num_layers=1, positions="learned")).double().eval()
    tokens = torch.randint(1, 12, (1, 16))
    changed = tokens.clone()
    changed[0, 8] = (tokens[0, 8] % 11) + 1
    block = model.encoder.blocks[0]
    x = model.encoder.embed(tokens).double() + model.encoder.positions[:16]
    y = model.encoder.embed(changed).double() + model.encoder.positions[:16]
    moved = (block.short_conv(block.norm_attention(x), None) - block.short_conv(block.norm_attention(y), None))
    moved = moved.abs().sum(-1)[0]
    assert set(torch.nonzero(moved > 0).flatten().tolist()) == {7, 8, 9}  # kernel 3: itself and one each side


def test_padding_does_not_reach_real_tokens():
    torch.manual_seed(0)
    model = EncoderClassifier(small()).double().eval()
    padded = torch.cat([torch.randint(1, 12, (1, 10)), torch.zeros(1, 6, dtype=torch.long)], dim=1)  # pad id 0
    before = model(padded)[0, :10]
    # what the padded positions hold changes; the real tokens' outputs must not (the last real
    # token's kernel reaches the first padded position)
    model.encoder.embed.weight.data[0] += torch.randn(8, dtype=torch.float64)
    assert torch.allclose(model(padded)[0, :10], before, atol=1e-12)


def test_even_or_negative_kernels_are_refused():
    for bad in (2, -1):
        with pytest.raises(BenchError, match="model.short_conv must be 0 \\(off\\) or an odd kernel size"):
            small(short_conv=bad)


def test_off_leaves_the_config_hash_of_existing_records_unchanged():
    # a record committed before the option existed (the earlier calibration)
    record = json.loads(next((RESULTS / "calibration" / "quick" / "x1" / "records").rglob("seed0.json")).read_text())
    config = dict(record["config"])
    assert cfg.config_hash(config) == record["config_hash"]
    config["model"] = {**config["model"], "short_conv": 0}
    assert cfg.config_hash(config) == record["config_hash"]
    config["model"]["short_conv"] = 3
    assert cfg.config_hash(config) != record["config_hash"]
