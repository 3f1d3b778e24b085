"""`sdpa`: PyTorch's fused exact attention, the speed and memory baseline of every sweep."""

from __future__ import annotations

import torch.nn.functional as F

from methods.base import AttentionMethod, check_qkv
from methods.registry import register_attention


@register_attention("sdpa")
class SDPAttention(AttentionMethod):
    """torch.nn.functional.scaled_dot_product_attention: exact, with the fastest backend available."""

    def forward(self, q, k, v, key_padding_mask=None):
        check_qkv(q, k, v, key_padding_mask)
        mask = None if key_padding_mask is None else key_padding_mask[:, None, None, :]  # (B, 1, 1, n)
        return F.scaled_dot_product_attention(q, k, v, attn_mask=mask)

    def macs(self, seq_len: int) -> int:
        return self.num_heads * (2 * seq_len * seq_len * self.head_dim + seq_len * seq_len)
