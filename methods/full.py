"""`full`: naive softmax attention, the dense reference every other method is checked against."""

from __future__ import annotations

import math
from typing import Optional

import torch

from methods.base import AttentionMethod, Capabilities, check_qkv
from methods.registry import register_attention


def padding_bias(key_padding_mask: Optional[torch.Tensor], dtype: torch.dtype) -> Optional[torch.Tensor]:
    """(B, 1, 1, n) additive bias: 0 for real keys, the dtype's minimum for padded ones.

    The finite minimum (not -inf) keeps an all-padded row finite instead of NaN.
    """
    if key_padding_mask is None:
        return None
    bias = torch.zeros(key_padding_mask.shape, dtype=dtype, device=key_padding_mask.device)
    return bias.masked_fill(~key_padding_mask, torch.finfo(dtype).min)[:, None, None, :]


@register_attention("full")
class FullAttention(AttentionMethod):
    """softmax(q k^T / sqrt(d)) v over all n x n pairs (Vaswani et al. 2017, eq. 1)."""

    capabilities = Capabilities(attention_dropout=True)

    def forward(self, q, k, v, key_padding_mask=None):
        check_qkv(q, k, v, key_padding_mask)
        scores = torch.matmul(q, k.transpose(-1, -2)) / math.sqrt(q.shape[-1])  # (B, H, n, n)
        bias = padding_bias(key_padding_mask, scores.dtype)
        if bias is not None:
            scores = scores + bias
        return torch.matmul(self.drop_attention(torch.softmax(scores, dim=-1)), v)  # (B, H, n, d)

    def macs(self, seq_len: int) -> int:
        # Two n x n x d products per head (scores and weighted sum) plus n^2 softmax elements.
        return self.num_heads * (2 * seq_len * seq_len * self.head_dim + seq_len * seq_len)
