"""`linformer`: keys and values projected along the sequence to a fixed length k (Wang et al. 2020).

Attention becomes softmax(q (E k)^T / sqrt(d)) (F v), with learned E, F of shape (k, n): linear in
n for a fixed k (paper eq. 7). Sharing follows the paper's section 4:

- "none": separate E and F for every head (no sharing; not in the paper, the upper bound).
- "headwise": one E and one F per layer, shared by its heads (the paper's lightest sharing and
  the default, as in the `linformer` package).
- "key-value": additionally E = F, one projection per layer.
- "layer": one projection for keys, values, heads and every layer of a model. Each layer owns its
  core here, so the cores share it through `_LAYER_SHARED`: every `linformer` core with
  sharing="layer" and the same (k, max_seq_len, init) that is alive at the same time uses the same
  nn.Parameter (a model's parameters() lists it once). The table holds weak references, so a model
  built after the previous one was freed gets a fresh projection; two such models alive at once
  share theirs.

Padding: padded keys and values are zeroed before the projection, so they add nothing to any
projected row; a sequence shorter than max_seq_len uses the first n columns of E and F, which is
the same as zero-padding it to max_seq_len.
"""

from __future__ import annotations

import math
import weakref
from typing import Literal

import torch
from torch import nn

from bench_common import BenchError
from methods.base import AttentionMethod, Capabilities, CostOption, check_qkv
from methods.registry import register_attention

Sharing = Literal["none", "headwise", "key-value", "layer"]
Init = Literal["normal", "identity"]

# (k, max_seq_len, init) -> the projection shared by all live sharing="layer" cores of that shape.
_LAYER_SHARED: "weakref.WeakValueDictionary[tuple, nn.Parameter]" = weakref.WeakValueDictionary()


def new_projection(heads: int, k: int, n: int, init: str) -> nn.Parameter:
    """(heads, k, n) sequence projection.

    "normal": entries N(0, 1/k), the Johnson-Lindenstrauss projection of the paper's theorem 1.
    "identity": E = I (needs k == n), under which Linformer is exactly full attention.
    """
    if init == "identity":
        if k != n:
            raise BenchError(f"linformer option init='identity' needs k == max_seq_len, got k={k}, max_seq_len={n}")
        weight = torch.eye(n).expand(heads, n, n).clone()
    else:
        weight = torch.randn(heads, k, n) / math.sqrt(k)
    return nn.Parameter(weight)


@register_attention("linformer")
class LinformerAttention(AttentionMethod):
    """Linformer (Wang et al. 2020): keys and values projected along the sequence to length k."""

    capabilities = Capabilities(fixed_length=True, attention_dropout=True)  # on the n x k weights
    cost_option = CostOption("k", maximum_per_token=1.0)  # k rows beyond n add cost and no information

    def __init__(
        self,
        num_heads: int,
        head_dim: int,
        max_seq_len: int,
        k: int = 256,
        sharing: Sharing = "headwise",
        init: Init = "normal",
    ):
        super().__init__(num_heads, head_dim, max_seq_len)
        if k <= 0:
            raise BenchError(f"linformer option k must be a positive integer, got {k}")
        # The paper's k = 256; more projected rows than tokens add cost and no information.
        self.k = min(k, max_seq_len)
        self.sharing = sharing
        if sharing == "layer":
            key = (self.k, max_seq_len, init)
            shared = _LAYER_SHARED.get(key)
            if shared is None:
                shared = new_projection(1, self.k, max_seq_len, init)
                _LAYER_SHARED[key] = shared
            self.proj_k = shared
            self.proj_v = shared
        else:
            heads = num_heads if sharing == "none" else 1
            self.proj_k = new_projection(heads, self.k, max_seq_len, init)
            self.proj_v = self.proj_k if sharing == "key-value" else new_projection(heads, self.k, max_seq_len, init)

    def forward(self, q, k, v, key_padding_mask=None):
        check_qkv(q, k, v, key_padding_mask)
        n = q.shape[2]
        if n > self.max_seq_len:
            raise BenchError(
                f"linformer needs a fixed length: sequence length {n} exceeds max_seq_len {self.max_seq_len}"
            )
        if key_padding_mask is not None:
            padded = ~key_padding_mask[:, None, :, None]  # (B, 1, n, 1)
            k = k.masked_fill(padded, 0.0)
            v = v.masked_fill(padded, 0.0)
        # Projections applied as (x^T E^T)^T: the batched operand comes first, so a traced MAC
        # count (fvcore's matmul handle multiplies out the first operand's shape) sees every head.
        proj_k_t = self.proj_k[..., :n].transpose(-1, -2)  # (H or 1, n, k)
        proj_v_t = self.proj_v[..., :n].transpose(-1, -2)
        keys_t = torch.matmul(k.transpose(-1, -2), proj_k_t)  # (B, H, d, k) = (E k)^T
        values = torch.matmul(v.transpose(-1, -2), proj_v_t).transpose(-1, -2)  # (B, H, k, d) = F v
        scores = torch.matmul(q, keys_t) / math.sqrt(q.shape[-1])  # (B, H, n, k)
        return torch.matmul(self.drop_attention(torch.softmax(scores, dim=-1)), values)  # (B, H, n, d)

    def macs(self, seq_len: int) -> int:
        n, k, d = seq_len, self.k, self.head_dim
        # Per head: E k and F v (k*n*d each), scores and weighted sum (n*k*d each), softmax n*k.
        return self.num_heads * (2 * k * n * d + 2 * n * k * d + n * k)
