"""`sdpa`: PyTorch's fused exact attention, the speed and memory baseline of every sweep."""

from __future__ import annotations

import torch.nn.functional as F

from methods.base import AttentionMethod, Capabilities, check_qkv
from methods.registry import register_attention


@register_attention("sdpa")
class SDPAttention(AttentionMethod):
    """torch.nn.functional.scaled_dot_product_attention: exact, with the fastest backend available."""

    capabilities = Capabilities(attention_dropout=True)  # its dropout_p, in training only

    def forward(self, q, k, v, key_padding_mask=None):
        check_qkv(q, k, v, key_padding_mask)
        mask = None if key_padding_mask is None else key_padding_mask[:, None, None, :]  # (B, 1, 1, n)
        rate = self.attention_dropout if self.training else 0.0
        return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=rate)

    def macs(self, seq_len: int) -> int:
        return self.num_heads * (2 * seq_len * seq_len * self.head_dim + seq_len * seq_len)
