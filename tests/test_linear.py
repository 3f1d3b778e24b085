"""`linear` (elu + 1 linear attention) against its closed form computed densely in float64.

The reference below shares no code with methods/linear.py: it forms the n x n similarity
phi(q) phi(k)^T with torch's own elu, zeroes padded keys' columns and normalises each row, the
quadratic left-to-right order the method avoids. Mutations tried, each failing
test_equals_the_dense_closed_form: phi = elu without the + 1, phi = relu(x) + exp(x) (the clamp
dropped: x + 1 + e^x for x > 0), the padded keys' features left in, and a 1/sqrt(d) scale added
to the queries. pytorch-fast-transformers is not installed here (it compiles C++ extensions), so
its LinearAttention is not compared.
"""

import math

import pytest
import torch
import torch.nn.functional as F

from bench_common import BenchError
from methods import create_attention

HEADS, DIM = 2, 8
EXACT = dict(atol=1e-12, rtol=1e-12)


def closed_form(q, k, v, key_padding_mask=None):
    similarity = (F.elu(q) + 1) @ (F.elu(k) + 1).transpose(-1, -2)  # (B, H, n, n)
    if key_padding_mask is not None:
        similarity = similarity * key_padding_mask[:, None, None, :]
    return (similarity / similarity.sum(dim=-1, keepdim=True)) @ v


def qkv(n, batch=2, seed=0, scale=2.0):
    generator = torch.Generator().manual_seed(seed)
    # scale 2: many entries on each side of 0, so both branches of elu are exercised
    return (scale * torch.randn(3, batch, HEADS, n, DIM, generator=generator, dtype=torch.float64)).unbind(0)


def linear(n):
    return create_attention("linear", num_heads=HEADS, head_dim=DIM, max_seq_len=n).double()


@pytest.mark.parametrize("n", [1, 17, 64, 200])
@pytest.mark.parametrize("padded", [False, True], ids=["no-padding", "padding"])
def test_equals_the_dense_closed_form(n, padded):
    q, k, v = qkv(n)
    mask = (torch.arange(n)[None, :] < torch.tensor([n, max(1, n // 3)])[:, None]) if padded else None
    out = linear(n)(q, k, v, key_padding_mask=mask)
    torch.testing.assert_close(out, closed_form(q, k, v, mask), **EXACT)  # every row: no query is masked


def test_an_example_with_no_real_key_gives_zeros_not_nan():
    q, k, v = qkv(8, batch=1)
    out = linear(8)(q, k, v, key_padding_mask=torch.zeros(1, 8, dtype=torch.bool))
    assert torch.equal(out, torch.zeros_like(out))


def test_cost_is_linear_in_n():
    method = linear(1024)
    assert method.macs(2048) == 2 * method.macs(1024)
    assert method.macs(1024) == HEADS * (2 * 1024 * DIM + 2 * 1024 * DIM * (DIM + 1))
    assert type(method).cost_option is None  # O(n d^2): no option trades cost for accuracy


def test_takes_no_options():
    with pytest.raises(BenchError, match="unknown option 'kernel'"):
        create_attention("linear", num_heads=2, head_dim=8, max_seq_len=16, kernel="relu")
