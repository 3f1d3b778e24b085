"""`local` (sliding window) against dense softmax attention masked to the band, in float64.

The reference below shares no code with methods/local.py: it scores all n x n pairs and masks
|i - j| > w with -inf. Mutations tried, each failing test_equals_the_dense_band_reference:
the band test `<= window` changed to `< window` (window off by one), the spans' clamp to the
sequence removed (end blocks then score keys outside their band's reach), and the key padding
mask dropped from `allowed`.
"""

import math

import pytest
import torch
from torch import nn

from bench_common import BenchError
from harness.measure.flops import analyze
from methods import create_attention

HEADS, DIM = 2, 8
EXACT = dict(atol=1e-12, rtol=1e-12)


def band_reference(q, k, v, window, key_padding_mask=None):
    n = q.shape[2]
    scores = q @ k.transpose(-1, -2) / math.sqrt(q.shape[-1])
    position = torch.arange(n)
    allowed = (position[:, None] - position[None, :]).abs() <= window
    if key_padding_mask is not None:
        allowed = allowed & key_padding_mask[:, None, None, :]
    return torch.softmax(scores.masked_fill(~allowed, -math.inf), dim=-1) @ v


def qkv(n, batch=2, seed=0):
    generator = torch.Generator().manual_seed(seed)
    return torch.randn(3, batch, HEADS, n, DIM, generator=generator, dtype=torch.float64).unbind(0)


def ragged_mask(n, batch=2):
    """Example b keeps its first n - 7 b tokens: the padding starts mid-block."""
    return torch.arange(n)[None, :] < torch.tensor([n - 7 * b for b in range(batch)])[:, None]


def local(n, **options):
    return create_attention("local", num_heads=HEADS, head_dim=DIM, max_seq_len=n, **options).double().eval()


CASES = [  # (n, window, block_size): multiples of the block and not, windows below, at and above it
    (64, 3, 8), (61, 3, 8), (100, 0, 8), (100, 8, 8), (100, 13, 8), (97, 5, 16), (130, 20, 4),
]


@pytest.mark.parametrize("n, window, block_size", CASES)
@pytest.mark.parametrize("padded", [False, True], ids=["no-padding", "padding"])
def test_equals_the_dense_band_reference(n, window, block_size, padded):
    method = local(n, window=window, block_size=block_size)
    assert method.geometry(n)[1] > 1, "these cases must run the blocked path"
    q, k, v = qkv(n)
    mask = ragged_mask(n) if padded else None
    out = method(q, k, v, key_padding_mask=mask)
    expected = band_reference(q, k, v, window, mask)
    rows = mask[:, None, :, None].expand_as(out) if padded else torch.ones_like(out, dtype=torch.bool)
    torch.testing.assert_close(out[rows], expected[rows], **EXACT)


@pytest.mark.parametrize("n, window", [(40, 39), (40, 100), (130, 129)])
def test_a_window_covering_every_key_is_full_attention(n, window):
    q, k, v = qkv(n)
    mask = ragged_mask(n)
    full = create_attention("full", num_heads=HEADS, head_dim=DIM, max_seq_len=n).double()
    out = local(n, window=window, block_size=8)(q, k, v, key_padding_mask=mask)
    real = mask[:, None, :, None].expand_as(out)
    torch.testing.assert_close(out[real], full(q, k, v, key_padding_mask=mask)[real], **EXACT)


def test_the_cost_is_linear_in_n_and_grows_with_the_window():
    method = local(4096, window=25, block_size=32)
    assert method.macs(4096) == 2 * method.macs(2048)  # linear, where full would quadruple
    assert method.macs(4096) < 0.03 * HEADS * 4096**2 * (2 * DIM + 1)
    for n in (1, 7, 64, 129, 300):  # monotone: the cost option's contract that bisection relies on
        costs = [method.macs(n) for method in (local(n, window=w, block_size=32) for w in range(0, n + 2))]
        assert costs == sorted(costs), n
        assert costs[-1] == HEADS * n * n * (2 * DIM + 1)  # a window past n costs exactly n x n


class CoreOnly(nn.Module):
    def __init__(self, core):
        super().__init__()
        self.core = core

    def forward(self, q, k, v, key_padding_mask):
        return self.core(q, k, v, key_padding_mask=key_padding_mask)


@pytest.mark.parametrize("n, window, block_size", [(100, 13, 8), (256, 25, 32), (40, 50, 8)])
def test_macs_match_fvcore_with_padding(n, window, block_size):
    method = local(n, window=window, block_size=block_size).float()
    q, k, v = (x.float() for x in qkv(n, batch=1))
    with torch.no_grad():
        analysis = analyze(CoreOnly(method), (q, k, v, ragged_mask(n, batch=1)))
    assert analysis.total("core") == method.macs(n)
    assert dict(analysis.unsupported_ops("core")) == {}


def test_options_are_validated():
    with pytest.raises(BenchError, match="did you mean 'window'"):
        create_attention("local", num_heads=2, head_dim=8, max_seq_len=16, windw=3)
    with pytest.raises(BenchError, match="window"):
        create_attention("local", num_heads=2, head_dim=8, max_seq_len=16, window="wide")
    with pytest.raises(BenchError, match="window must be >= 0"):
        create_attention("local", num_heads=2, head_dim=8, max_seq_len=16, window=-1)
    with pytest.raises(BenchError, match="block_size must be a positive"):
        create_attention("local", num_heads=2, head_dim=8, max_seq_len=16, block_size=0)


def test_the_window_is_solved_by_the_matched_machinery():
    from harness.config import layered as cfg
    from harness.sweep.matching import solve_option

    config = cfg.default_layer("cpu")
    config["task"] = "hand"
    config["model"].update(vocab_size=8, num_classes=2, max_seq_len=64, emb_dim=32, qkv_dim=32, num_heads=2,
                           num_layers=1, attention="local", attention_options={})
    target = create_attention("local", num_heads=2, head_dim=16, max_seq_len=64, window=9).macs(64)
    assert solve_option(config, target) == (9, target)


def test_gradients_equal_the_reference_gradients_on_the_blocked_path():
    n, window = 61, 8  # wider than example 1's 7 pads: every reference row keeps a key (no NaN)
    mask = ragged_mask(n)
    weights = torch.randn(2, HEADS, n, DIM, generator=torch.Generator().manual_seed(5), dtype=torch.float64)
    weights = weights * mask[:, None, :, None]  # padded queries' outputs are not compared
    grads = []
    for attend in (local(n, window=window, block_size=8), lambda q, k, v, key_padding_mask: band_reference(
            q, k, v, window, key_padding_mask)):
        q, k, v = (x.requires_grad_() for x in qkv(n))
        (attend(q, k, v, key_padding_mask=mask) * weights).sum().backward()
        grads.append((q.grad, k.grad, v.grad))
    for got, expected in zip(*grads):
        torch.testing.assert_close(got, expected, **EXACT)
