"""`local`: sliding-window attention, each query attends to the keys within +-window positions.

    out_i = softmax_j(q_i . k_j / sqrt(d), |i - j| <= w) v_j

Computed blockwise, never as an n x n matrix: the queries are cut into blocks of `block_size`
(the last one padded), and each block scores only the `block_size + 2w` consecutive keys its band
can reach. Keys inside that span but outside a query's band, and padded keys, are masked before
the softmax. The span of a block at either end of the sequence is moved inwards rather than
padded, so no key outside the sequence is scored. The cost per head is

    MACs = min(blocks * block_size * span, n^2) * (2d + 1),  span = min(block_size + 2w, padded n)

(a score, a softmax element and a weighted value per scored key): linear in n for a fixed window,
growing with the window, independent of the data. Where the blocks would score n^2 keys or more
(wide windows, short sequences) the whole sequence is one block, the n x n scores masked to the
band, which costs n^2. With w >= n - 1 every query sees every key: full attention.

Padding: padded keys get no weight; a real query always sees itself, so its row is never empty.
"""

from __future__ import annotations

import math
from typing import Callable

import torch

from bench_common import BenchError
from methods.base import AttentionMethod, Capabilities, CostOption, check_qkv
from methods.registry import register_attention


def masked_attention(
    queries: torch.Tensor, keys: torch.Tensor, values: torch.Tensor, allowed: torch.Tensor,
    drop: Callable[[torch.Tensor], torch.Tensor],
) -> torch.Tensor:
    """softmax(q k^T / sqrt(d)) v over the (query, key) pairs `allowed` marks (broadcast to the scores).

    Masked with the dtype's finite minimum: a row with no allowed key stays finite instead of NaN.
    """
    scores = torch.matmul(queries, keys.transpose(-1, -2)) / math.sqrt(queries.shape[-1])
    scores = scores.masked_fill(~allowed, torch.finfo(scores.dtype).min)
    return torch.matmul(drop(torch.softmax(scores, dim=-1)), values)


def pad_to(x: torch.Tensor, length: int, dim: int) -> torch.Tensor:
    """x extended with zeros (False) along `dim` to `length` (concatenated: a traced pad is an
    operator the MAC count does not know)."""
    shape = list(x.shape)
    shape[dim] = length - x.shape[dim]
    return torch.cat([x, x.new_zeros(shape)], dim=dim)


def padded_keys_mask(key_padding_mask, batch: int, n: int, padded: int, device) -> torch.Tensor:
    """(B, padded) bool, True = a real key: the caller's mask, with the tail added to fill blocks as padding."""
    real = torch.ones(batch, n, dtype=torch.bool, device=device) if key_padding_mask is None else key_padding_mask
    return pad_to(real, padded, dim=1)


@register_attention("local")
class LocalAttention(AttentionMethod):
    """Sliding-window softmax attention over +-window positions, computed in query blocks."""

    capabilities = Capabilities(attention_dropout=True)  # on each block's normalised weights
    # A window of n already sees every key; wider ones cost no more.
    cost_option = CostOption("window", minimum=0, maximum_per_token=1.0)

    def __init__(self, num_heads: int, head_dim: int, max_seq_len: int, window: int = 25, block_size: int = 32):
        super().__init__(num_heads, head_dim, max_seq_len)
        if window < 0:
            raise BenchError(f"local option window must be >= 0 (0 = each query sees itself only), got {window}")
        if block_size <= 0:
            raise BenchError(f"local option block_size must be a positive integer, got {block_size}")
        self.window = window
        self.block_size = block_size

    def geometry(self, seq_len: int) -> tuple[int, int, int]:
        """(query block length, number of blocks, keys each block scores) at this length."""
        block = min(self.block_size, seq_len)
        blocks = math.ceil(seq_len / block)
        span = min(block + 2 * self.window, blocks * block)
        if blocks * block * span >= seq_len * seq_len:
            return seq_len, 1, seq_len  # one block of n x n is no dearer
        return block, blocks, span

    def forward(self, q, k, v, key_padding_mask=None):
        check_qkv(q, k, v, key_padding_mask)
        batch, heads, n, d = q.shape
        block, blocks, span = self.geometry(n)
        padded = blocks * block
        q, k, v = (pad_to(x, padded, dim=2) for x in (q, k, v))  # (B, H, padded, d)
        real = padded_keys_mask(key_padding_mask, batch, n, padded, q.device)

        # Block c's span starts w before its first query, moved inside [0, padded - span].
        starts = (torch.arange(blocks, device=q.device) * block - self.window).clamp(0, padded - span)
        key_pos = (starts[:, None] + torch.arange(span, device=q.device)).reshape(-1)  # (blocks * span,)
        query_pos = torch.arange(padded, device=q.device).view(blocks, block, 1)
        in_band = (query_pos - key_pos.view(blocks, 1, span)).abs() <= self.window  # (blocks, block, span)
        allowed = in_band & real.index_select(1, key_pos).view(batch, 1, blocks, 1, span)

        keys = k.index_select(2, key_pos).view(batch, heads, blocks, span, d)
        values = v.index_select(2, key_pos).view(batch, heads, blocks, span, -1)
        queries = q.view(batch, heads, blocks, block, d)
        out = masked_attention(queries, keys, values, allowed, self.drop_attention)  # (B, H, blocks, block, d)
        return out.reshape(batch, heads, padded, -1)[:, :, :n]

    def macs(self, seq_len: int) -> int:
        block, blocks, span = self.geometry(seq_len)
        return self.num_heads * blocks * block * span * (2 * self.head_dim + 1)
