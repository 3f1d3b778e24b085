"""`local` (sliding window) against dense softmax attention masked to the band, in float64.

The reference below (over tests/attention_support.py's dense attention) shares no code with
methods/local.py: it scores all n x n pairs and masks |i - j| > w with -inf. Mutations tried, each failing test_equals_the_dense_band_reference:
the band test `<= window` changed to `< window` (window off by one), the spans' clamp to the
sequence removed (end blocks then score keys outside their band's reach), and the key padding
mask dropped from `allowed`.
"""

from functools import partial

import pytest
import torch

from attention_support import (HEAD_DIM, HEADS, MATCHED_SHAPE, dense_attention, fvcore_macs, input_gradients, layer, qkv,
                               ragged_mask, real_rows, solve_matched)
from bench_common import BenchError
from methods import create_attention

EXACT = dict(atol=1e-12, rtol=1e-12)
PAD_STEP = 7  # ragged_mask: example b keeps its first n - 7 b tokens


def band_reference(q, k, v, window, key_padding_mask=None):
    position = torch.arange(q.shape[2])
    band = (position[:, None] - position[None, :]).abs() <= window
    return dense_attention(q, k, v, band, key_padding_mask)


local = partial(layer, "local")


CASES = [  # (n, window, block_size): multiples of the block and not, windows below, at and above it
    (64, 3, 8), (61, 3, 8), (100, 0, 8), (100, 8, 8), (100, 13, 8), (97, 5, 16), (130, 20, 4),
]


@pytest.mark.parametrize("n, window, block_size", CASES)
@pytest.mark.parametrize("padded", [False, True], ids=["no-padding", "padding"])
def test_equals_the_dense_band_reference(n, window, block_size, padded):
    method = local(n, window=window, block_size=block_size)
    assert method.geometry(n)[1] > 1, "these cases must run the blocked path"
    q, k, v = qkv(n)
    mask = ragged_mask(n, PAD_STEP) if padded else None
    out = method(q, k, v, key_padding_mask=mask)
    expected = band_reference(q, k, v, window, mask)
    rows = real_rows(mask, out)
    torch.testing.assert_close(out[rows], expected[rows], **EXACT)


@pytest.mark.parametrize("n, window", [(40, 39), (40, 100), (130, 129)])
def test_a_window_covering_every_key_is_full_attention(n, window):
    q, k, v = qkv(n)
    mask = ragged_mask(n, PAD_STEP)
    full = layer("full", n)
    out = local(n, window=window, block_size=8)(q, k, v, key_padding_mask=mask)
    real = real_rows(mask, out)
    torch.testing.assert_close(out[real], full(q, k, v, key_padding_mask=mask)[real], **EXACT)


def test_the_cost_is_linear_in_n_and_grows_with_the_window():
    method = local(4096, window=25, block_size=32)
    assert method.macs(4096) == 2 * method.macs(2048)  # linear, where full would quadruple
    assert method.macs(4096) < 0.03 * HEADS * 4096**2 * (2 * HEAD_DIM + 1)
    for n in (1, 7, 64, 129, 300):  # monotone: the cost option's contract that bisection relies on
        costs = [method.macs(n) for method in (local(n, window=w, block_size=32) for w in range(0, n + 2))]
        assert costs == sorted(costs), n
        assert costs[-1] == HEADS * n * n * (2 * HEAD_DIM + 1)  # a window past n costs exactly n x n


@pytest.mark.parametrize("n, window, block_size", [(100, 13, 8), (256, 25, 32), (40, 50, 8)])
def test_macs_match_fvcore_with_padding(n, window, block_size):
    method = local(n, window=window, block_size=block_size)
    assert fvcore_macs(method, n) == (method.macs(n), {})


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
    target = create_attention("local", **MATCHED_SHAPE, window=9).macs(64)
    assert solve_matched("local", {}, target) == (9, target)


def test_gradients_equal_the_reference_gradients_on_the_blocked_path():
    n, window = 61, 8  # wider than example 1's 7 pads: every reference row keeps a key (no NaN)
    mask = ragged_mask(n, PAD_STEP)
    reference = partial(band_reference, window=window)
    for got, expected in zip(input_gradients(local(n, window=window, block_size=8), n, mask),
                             input_gradients(reference, n, mask)):
        torch.testing.assert_close(got, expected, **EXACT)
