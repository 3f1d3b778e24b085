"""Reformer LSH attention against `reformer-pytorch`'s LSHAttention (same rotations, float64), dense
attention where one pair of chunks covers every key, padding and batch independence past the
contract tests' setting (there the default chunk of 64 already covers n = 64), and MACs.

Mutations tried, each failing test_agrees_with_peer_package: the hash's sign flipped
(argmax over [-xR, xR]); no look-back (a chunk attends to itself only); the rounds averaged with
equal weights instead of by their softmax mass.
"""

import math
from functools import partial

import pytest
import torch

from attention_support import HEAD_DIM, HEADS, fvcore_macs, layer, qkv, random, real_rows
from methods import create_attention

EXACT = dict(atol=1e-10, rtol=1e-10)

reformer = partial(layer, "reformer")


@pytest.mark.parametrize("bucket_size, rounds", [(8, 1), (8, 3), (4, 2), (16, 2)])
def test_agrees_with_peer_package(monkeypatch, bucket_size, rounds):
    from reformer_pytorch.reformer_pytorch import LSHAttention

    n, batch = 64, 2
    ours = reformer(n, bucket_size=bucket_size, rounds=rounds)
    shared, v = random(2, batch, HEADS, n, HEAD_DIM, seed=1).unbind(0)
    out = ours(shared, shared, v)  # q = k: our shared vector (q + k) / 2 is then the package's qk

    # The package draws its rotations with torch.randn inside the call; hand it ours instead.
    rotations = ours.rotations

    def our_rotations(shape, **kwargs):
        assert tuple(shape) == (1, *rotations.shape)
        return rotations[None].clone()

    monkeypatch.setattr(torch, "randn", our_rotations)
    peer = LSHAttention(bucket_size=bucket_size, n_hashes=rounds).eval()
    expected, _, _ = peer(shared.reshape(batch * HEADS, n, HEAD_DIM), v.reshape(batch * HEADS, n, HEAD_DIM))
    monkeypatch.undo()
    torch.testing.assert_close(out, expected.view(batch, HEADS, n, HEAD_DIM), **EXACT)


def dense_shared_qk_attention(shared, v, mask=None):
    """Shared-QK attention written out: unit keys, self scored -5e4, padded keys excluded."""
    n = shared.shape[2]
    keys = shared / shared.norm(dim=-1, keepdim=True)
    scores = shared @ keys.transpose(-1, -2) / math.sqrt(shared.shape[-1])
    if mask is not None:
        scores = scores.masked_fill(~mask[:, None, None, :], -math.inf)
    scores = scores.masked_fill(torch.eye(n, dtype=torch.bool), -5e4)
    return torch.softmax(scores, dim=-1) @ v


@pytest.mark.parametrize("n, bucket_size", [(64, 32), (64, 1000), (50, 25), (51, 26)])
def test_one_pair_of_chunks_is_full_shared_qk_attention(n, bucket_size):
    shared, v = random(2, 2, HEADS, n, HEAD_DIM, seed=1).unbind(0)
    mask = torch.ones(2, n, dtype=torch.bool)
    mask[0, n // 2 :] = False
    ours = reformer(n, bucket_size=bucket_size, rounds=1)
    torch.testing.assert_close(ours(shared, shared, v), dense_shared_qk_attention(shared, v), **EXACT)
    out = ours(shared, shared, v, key_padding_mask=mask)
    real = real_rows(mask, out)
    torch.testing.assert_close(out[real], dense_shared_qk_attention(shared, v, mask)[real], **EXACT)


@pytest.mark.parametrize("n", [64, 50])
def test_padding_and_batch_independence_with_many_chunks(n):
    ours = reformer(n, bucket_size=4, rounds=3)
    q, k, v = qkv(n, seed=1)
    mask = torch.ones(2, n, dtype=torch.bool)
    mask[0, n // 2 :] = False
    mask[1, [0, 7, 9]] = False
    out = ours(q, k, v, key_padding_mask=mask)
    padded = ~mask[:, None, :].expand(-1, HEADS, -1)
    k2, v2 = k.clone(), v.clone()
    k2[padded], v2[padded] = 50.0, -50.0
    real = real_rows(mask, out)
    torch.testing.assert_close(ours(q, k2, v2, key_padding_mask=mask)[real], out[real], **EXACT)
    alone = torch.cat([ours(q[i : i + 1], k[i : i + 1], v[i : i + 1], key_padding_mask=mask[i : i + 1]) for i in range(2)])
    torch.testing.assert_close(alone, out, **EXACT)


def test_rotations_redrawn_in_training_only():
    ours = reformer(32, bucket_size=4)
    q, k, v = qkv(32, batch=1, seed=1)
    before = ours.rotations.clone()
    ours(q, k, v)
    assert torch.equal(before, ours.rotations)
    ours.train()(q, k, v)
    assert not torch.equal(before, ours.rotations)


@pytest.mark.parametrize("n, options", [(64, {"bucket_size": 8, "rounds": 2}), (50, {"bucket_size": 4, "rounds": 3}),
                                        (40, {})])
def test_macs_match_fvcore(n, options):
    ours = reformer(n, **options)
    assert fvcore_macs(ours, n) == (ours.macs(n), {})


def test_cost_grows_with_rounds():
    costs = [reformer(256, rounds=r).macs(256) for r in (1, 2, 3, 8)]
    assert costs == sorted(costs) and len(set(costs)) == 4


def test_a_sequence_longer_than_built_for_is_refused():
    from bench_common import BenchError

    q = torch.randn(1, HEADS, 64, HEAD_DIM)
    with pytest.raises(BenchError, match="built for sequences of up to 16 tokens; got 64"):
        create_attention("reformer", num_heads=HEADS, head_dim=HEAD_DIM, max_seq_len=16, bucket_size=4)(q, q, q)
