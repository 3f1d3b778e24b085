"""`bigbird` against dense softmax attention masked to the same block pattern, in float64.

The reference below (over tests/attention_support.py's dense attention) shares no code with
methods/bigbird.py: it builds the n x n mask token by token from the pattern's definition (global
first and last block, a three-block window, the layer's random blocks as `random_blocks` reports
them) and masks with -inf. The random table itself is checked separately against its rules.
Mutations tried, each failing test_equals_the_dense_pattern_reference: the masked copy of the
global block in rows 1 and nb - 2 left unmasked (that block then counts twice in the softmax), the
random key blocks gathered from head 0 for every head, window block i - 1 replaced by i + 1 in the
blocked path, and random blocks allowed to fall on window blocks (`abs(cols - rows) < 1`; the
rules test fails too).
"""

import math
from functools import partial

import pytest
import torch

from attention_support import (HEAD_DIM, HEADS, MATCHED_SHAPE, dense_attention, fvcore_macs, input_gradients, layer, qkv,
                               ragged_mask, real_rows, solve_matched)
from bench_common import BenchError
from methods import create_attention

EXACT = dict(atol=1e-12, rtol=1e-12)
PAD_STEP = 11  # ragged_mask: example b keeps its first n - 11 b tokens


def pattern_reference(q, k, v, block, random_blocks, key_padding_mask=None):
    """Dense attention over the BigBird pattern; random_blocks[h][i - 1] lists query block i's."""
    n = q.shape[2]
    blocks = math.ceil(n / block)
    allowed = torch.zeros(HEADS, n, n, dtype=torch.bool)
    for h in range(HEADS):
        for i in range(n):
            for j in range(n):
                bi, bj = i // block, j // block
                global_pair = bi in (0, blocks - 1) or bj in (0, blocks - 1)
                random_pair = 0 < bi < blocks - 1 and bj in random_blocks[h][bi - 1]
                allowed[h, i, j] = global_pair or abs(bi - bj) <= 1 or random_pair
    return dense_attention(q, k, v, allowed, key_padding_mask)


bigbird = partial(layer, "bigbird")


CASES = [  # (n, block_size, num_random_blocks, which path the cost rule picks)
    (96, 8, 2, "blocked"), (100, 8, 3, "blocked"), (101, 4, 1, "blocked"), (90, 6, 0, "blocked"),
    (49, 8, 1, "dense"),  # 7 blocks: the pattern leaves keys out, yet n x n is cheaper than the blocks
]


@pytest.mark.parametrize("n, block_size, random, path", CASES)
@pytest.mark.parametrize("padded", [False, True], ids=["no-padding", "padding"])
def test_equals_the_dense_pattern_reference(n, block_size, random, path, padded):
    method = bigbird(n, block_size=block_size, num_random_blocks=random)
    block, blocks, r, dense = method.geometry(n)
    assert dense == (path == "dense") and r == random
    table = method.random_blocks(blocks).tolist() if blocks > 2 else [[]] * HEADS
    q, k, v = qkv(n)
    mask = ragged_mask(n, PAD_STEP) if padded else None
    out = method(q, k, v, key_padding_mask=mask)
    expected = pattern_reference(q, k, v, block, table, mask)
    rows = real_rows(mask, out)
    torch.testing.assert_close(out[rows], expected[rows], **EXACT)


@pytest.mark.parametrize("n, block_size, random", [(32, 8, 3), (31, 8, 0), (64, 64, 3), (30, 64, 0)])
def test_a_pattern_covering_every_key_is_full_attention(n, block_size, random):
    """At most 4 blocks: every block is global or next to the others. (With 5, block 1 misses block 3.)"""
    q, k, v = qkv(n)
    mask = ragged_mask(n, PAD_STEP)
    full = layer("full", n)
    out = bigbird(n, block_size=block_size, num_random_blocks=random)(q, k, v, key_padding_mask=mask)
    real = real_rows(mask, out)
    torch.testing.assert_close(out[real], full(q, k, v, key_padding_mask=mask)[real], **EXACT)


def test_random_blocks_follow_the_rules_and_the_layer_seed():
    method = bigbird(200, block_size=10, num_random_blocks=3)
    blocks = 20
    table = method.random_blocks(blocks)
    assert table.shape == (HEADS, blocks - 2, 3)
    for h in range(HEADS):
        for i, chosen in enumerate(table[h].tolist(), start=1):
            assert len(set(chosen)) == 3
            assert all(0 < j < blocks - 1 and abs(j - i) > 1 for j in chosen), (i, chosen)
    assert not torch.equal(table[0], table[1]), "each head draws its own"
    assert torch.equal(bigbird(200, seed=0, block_size=10).random_blocks(blocks), table)  # the run's seed decides
    other = bigbird(200, seed=1, block_size=10)
    assert not torch.equal(other.random_blocks(blocks), table)
    other.load_state_dict(method.state_dict())  # a checkpoint brings its pattern
    assert torch.equal(other.random_blocks(blocks), table)
    assert method.random_blocks(7).shape == (HEADS, 5, 2)  # r stops at nb - 5


def test_the_cost_is_linear_in_n_and_grows_with_the_random_blocks():
    method = bigbird(4096)
    assert method.macs(8192) < 2.05 * method.macs(4096)  # linear, where full would quadruple
    assert method.macs(4096) < 0.2 * HEADS * 4096**2 * (2 * HEAD_DIM + 1)
    for n, block in ((1, 4), (49, 8), (100, 8), (129, 64), (1000, 16)):  # monotone in the cost option
        costs = [bigbird(n, block_size=block, num_random_blocks=r).macs(n) for r in range(0, n + 1, max(1, n // 50))]
        assert costs == sorted(costs), n
        assert costs[-1] == HEADS * n * n * (2 * HEAD_DIM + 1)  # every block random: no dearer than n x n


@pytest.mark.parametrize("n, block_size, random", [(100, 8, 3), (256, 16, 3), (49, 8, 1)])
def test_macs_match_fvcore_with_padding(n, block_size, random):
    method = bigbird(n, block_size=block_size, num_random_blocks=random)
    assert fvcore_macs(method, n) == (method.macs(n), {})


def test_options_are_validated():
    with pytest.raises(BenchError, match="did you mean 'num_random_blocks'"):
        create_attention("bigbird", num_heads=2, head_dim=8, max_seq_len=16, num_random_block=3)
    with pytest.raises(BenchError, match="block_size"):
        create_attention("bigbird", num_heads=2, head_dim=8, max_seq_len=16, block_size=2.5)
    with pytest.raises(BenchError, match="num_random_blocks must be >= 0"):
        create_attention("bigbird", num_heads=2, head_dim=8, max_seq_len=16, num_random_blocks=-1)


def test_the_random_blocks_are_solved_by_the_matched_machinery():
    target = create_attention("bigbird", **MATCHED_SHAPE, block_size=4, num_random_blocks=5).macs(64)
    assert solve_matched("bigbird", {"block_size": 4}, target) == (5, target)


def test_gradients_equal_the_reference_gradients_on_the_blocked_path():
    n = 96
    method = bigbird(n, block_size=8, num_random_blocks=2)
    table = method.random_blocks(12).tolist()
    mask = ragged_mask(n, PAD_STEP)
    reference = partial(pattern_reference, block=8, random_blocks=table)
    for got, expected in zip(input_gradients(method, n, mask), input_gradients(reference, n, mask)):
        torch.testing.assert_close(got, expected, **EXACT)
