"""`xformers`: exact attention through xformers' memory-efficient CUDA kernels.

Registered on every machine, so listings and records name it; it declares itself CUDA-only and
imports xformers inside forward only, so listing methods never loads it (nor needs it installed).
"""

from __future__ import annotations

import torch

from bench_common import BenchError
from methods.base import AttentionMethod, Capabilities, check_qkv
from methods.registry import register_attention

INSTALL_HINT = "install the gpu extra: pip install 'treeformer-bench[gpu]'"
BIAS_ALIGNMENT = 8  # xformers' kernels want the bias's row stride to be a multiple of 8 elements


def padding_bias(key_padding_mask: torch.Tensor, num_heads: int, dtype: torch.dtype) -> torch.Tensor:
    """(B, H, n, n) additive bias, a broadcast view: 0 for real keys, the dtype's minimum for padded.

    Stored as (B, 1, 1, n rounded up to 8) and sliced, so its strides meet xformers' alignment;
    the finite minimum (as `full`) keeps a row with no real key finite.
    """
    batch, n = key_padding_mask.shape
    padded_n = -(-n // BIAS_ALIGNMENT) * BIAS_ALIGNMENT
    storage = torch.zeros(batch, 1, 1, padded_n, dtype=dtype, device=key_padding_mask.device)
    aligned = storage[..., :n]  # (B, 1, 1, n), row stride padded_n
    aligned.masked_fill_(~key_padding_mask[:, None, None, :], torch.finfo(dtype).min)
    return aligned.expand(batch, num_heads, n, n)


@register_attention("xformers")
class XformersAttention(AttentionMethod):
    """xformers.ops.memory_efficient_attention: exact attention in O(n) memory (CUDA only)."""

    capabilities = Capabilities(cuda_only=True, attention_dropout=True)  # its p, in training only

    def forward(self, q, k, v, key_padding_mask=None):
        check_qkv(q, k, v, key_padding_mask)
        try:
            from xformers.ops import memory_efficient_attention
        except ImportError as err:
            raise BenchError(f"attention method 'xformers' needs the xformers package ({err}); {INSTALL_HINT}") from err
        if q.device.type != "cuda":
            raise BenchError(f"attention method 'xformers' needs a CUDA device (no CPU kernels); got tensors on '{q.device}'")
        bias = None if key_padding_mask is None else padding_bias(key_padding_mask, q.shape[1], q.dtype)
        # xformers takes (B, n, H, d) ("BMHK"); its default scale is d^-1/2, as `full`.
        rate = self.attention_dropout if self.training else 0.0
        out = memory_efficient_attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2), attn_bias=bias, p=rate)
        return out.transpose(1, 2)  # (B, H, n, d)

    def macs(self, seq_len: int) -> int:
        # Exact attention, counted as SDPA: 2*n*n*d matmul MACs plus n*n softmax per head.
        return self.num_heads * (2 * seq_len * seq_len * self.head_dim + seq_len * seq_len)
