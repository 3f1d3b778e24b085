"""Nyströmformer against the `nystrom-attention` package (same weights and inputs, float64), exact
attention where every token is a landmark, and the pseudo-inverse iteration against torch's.

Mutations tried, each failing test_agrees_with_peer_package: padding the sequence at the back
instead of the front; the pseudo-inverse replaced by its initial guess A^T / scale (no iteration);
landmarks as segment sums (no division by the real-token count).
"""

from functools import partial

import pytest
import torch

from attention_support import HEAD_DIM, HEADS, dense_attention, fvcore_macs, layer, qkv, random, real_rows
from methods import create_attention
from methods.nystromformer import iterative_pinv

EXACT = dict(atol=1e-10, rtol=1e-10)

nystromformer = partial(layer, "nystromformer")


def masks(n: int) -> dict:
    """Padding that leaves a real token in every landmark segment (where the package differs, below)."""
    partly = torch.ones(2, n, dtype=torch.bool)
    partly[0, [5, 6, n - 3, n - 2, n - 1]] = False
    partly[1, [1, 2]] = False
    return {"none": None, "all-real": torch.ones(2, n, dtype=torch.bool), "partial": partly}


# n = 61 and 50 pad 3 and 6 tokens at the front; unmasked, the package counts that padding as
# tokens, so it is compared there with a mask (all real or partial), under which it masks them as we do.
@pytest.mark.parametrize("n, landmarks, mask_kind", [
    (64, 16, "none"), (64, 16, "all-real"), (64, 16, "partial"),
    (61, 16, "all-real"), (61, 16, "partial"), (50, 7, "all-real"), (50, 7, "partial"),
])
def test_agrees_with_peer_package(n, landmarks, mask_kind):
    from nystrom_attention import NystromAttention

    mask = masks(n)[mask_kind]
    ours = nystromformer(n, landmarks=landmarks, conv_kernel=5)
    # eps=0: the package adds eps to the landmark divisor; we divide by the real-token count itself.
    peer = NystromAttention(dim=HEADS * HEAD_DIM, dim_head=HEAD_DIM, heads=HEADS, num_landmarks=landmarks,
                            pinv_iterations=6, residual=True, residual_conv_kernel=5, eps=0.0).double()
    with torch.no_grad():
        peer.res_conv.weight.copy_(ours.conv_weight)
    x = random(2, n, HEADS * HEAD_DIM, seed=1)
    q, k, v = (t.view(2, n, HEADS, HEAD_DIM).transpose(1, 2) for t in peer.to_qkv(x).chunk(3, dim=-1))
    out = ours(q, k, v, key_padding_mask=mask).transpose(1, 2).reshape(2, n, HEADS * HEAD_DIM)
    out = peer.to_out(out)
    # One example at a time: the package scales its pseudo-inverse's first guess over the whole batch.
    expected = torch.cat([peer(x[i : i + 1], mask=None if mask is None else mask[i : i + 1]) for i in range(2)])
    real = slice(None) if mask is None else mask
    torch.testing.assert_close(out[real], expected[real], **EXACT)


@pytest.mark.parametrize("landmarks", [32, 40])
def test_every_token_a_landmark_is_full_attention(landmarks):
    n = 32
    q, k, v = qkv(n)
    mask = masks(n)["partial"]
    ours = nystromformer(n, landmarks=landmarks, conv_kernel=0)
    torch.testing.assert_close(ours(q, k, v), dense_attention(q, k, v), **EXACT)
    out = ours(q, k, v, key_padding_mask=mask)
    real = real_rows(mask, out)
    torch.testing.assert_close(out[real], dense_attention(q, k, v, key_padding_mask=mask)[real], **EXACT)


def test_a_landmark_with_no_real_token_is_left_out():
    """16 landmarks over 64 tokens, the last 16 padded: the same as 12 landmarks over the first 48.

    (The package differs here: it keeps a uniform row for an empty landmark.) Mutation tried: no
    identity row for empty landmarks (kernel_2 as the softmax leaves it): fails."""
    q, k, v = qkv(64)
    mask = torch.ones(2, 64, dtype=torch.bool)
    mask[:, 48:] = False
    out = nystromformer(64, landmarks=16, conv_kernel=0)(q, k, v, key_padding_mask=mask)
    shorter = nystromformer(48, landmarks=12, conv_kernel=0)(q[:, :, :48], k[:, :, :48], v[:, :, :48])
    torch.testing.assert_close(out[:, :, :48], shorter, **EXACT)


def test_iterative_pinv_converges_to_the_inverse():
    scores = random(2, 3, 12, 12, seed=0)
    kernel = torch.softmax(scores, dim=-1)
    torch.testing.assert_close(iterative_pinv(kernel, 40), torch.linalg.inv(kernel), atol=1e-8, rtol=1e-8)
    assert not torch.allclose(iterative_pinv(kernel, 2), torch.linalg.inv(kernel), atol=1e-3)


def test_approximation_error_falls_with_more_landmarks():
    n = 128
    q, k, v = qkv(n, batch=1, seed=2)
    q, k = q * 0.5, k * 0.5
    reference = dense_attention(q, k, v)
    errors = [(nystromformer(n, landmarks=m, conv_kernel=0)(q, k, v) - reference).norm().item() for m in (4, 16, 64)]
    assert errors[0] > errors[1] > errors[2], errors


def test_nystrom_path_padding_and_batch_independence():
    """The contract tests run at n = 64 = the default landmarks (the exact path); this is the approximation."""
    n = 64
    ours = nystromformer(n, landmarks=8)
    q, k, v = qkv(n)
    mask = masks(n)["partial"]
    out = ours(q, k, v, key_padding_mask=mask)
    k2, v2 = k.clone(), v.clone()
    k2[~mask[:, None, :].expand(-1, HEADS, -1)] = 100.0
    v2[~mask[:, None, :].expand(-1, HEADS, -1)] = -100.0
    real = real_rows(mask, out)
    torch.testing.assert_close(ours(q, k2, v2, key_padding_mask=mask)[real], out[real], **EXACT)
    alone = torch.cat([ours(q[i : i + 1], k[i : i + 1], v[i : i + 1], key_padding_mask=mask[i : i + 1]) for i in range(2)])
    torch.testing.assert_close(alone, out, **EXACT)


@pytest.mark.parametrize("n, options", [(96, {"landmarks": 10}), (64, {"landmarks": 64}), (64, {"landmarks": 8, "conv_kernel": 0})])
def test_macs_match_fvcore_on_both_paths(n, options):
    ours = nystromformer(n, **options)
    assert fvcore_macs(ours, n) == (ours.macs(n), {})


def test_options_are_validated():
    from bench_common import BenchError

    with pytest.raises(BenchError, match="conv_kernel must be 0 .* or odd"):
        nystromformer(16, conv_kernel=4)
    with pytest.raises(BenchError, match="landmarks must be a positive integer"):
        nystromformer(16, landmarks=0)
    with pytest.raises(BenchError, match="landmarks"):
        create_attention("nystromformer", num_heads=1, head_dim=4, max_seq_len=8, landmark=3)
