"""`linear`: kernelised linear attention with elu + 1 features (Katharopoulos et al. 2020).

The softmax similarity exp(q . k) is replaced by phi(q) . phi(k) with phi(x) = elu(x) + 1, a
positive feature map of the same dimension d (paper eq. 7), so that

    out_i = phi(q_i)^T (sum_j phi(k_j) v_j^T) / phi(q_i)^T (sum_j phi(k_j))

is computed right to left in O(n d^2) instead of O(n^2 d) (paper eq. 5 and 6). There is no
1/sqrt(d) scale: the feature map takes its place, as in the paper. Nothing here is random or
learned, so the method is exact with respect to this closed form (tests/test_linear.py).

phi is written as relu(x) + exp(min(x, 0)), which equals elu(x) + 1 and keeps the exponential
visible to the MAC count (one per element, the suite's convention for exp).

Cost per head: 2 n d exponentials (q and k) and 2 n d (d + 1) MACs for phi(k)^T [v, 1] and
phi(q) times that; the normaliser rides along as the column of ones.

Padding: padded keys get all-zero features, so they add nothing to numerator or denominator.
Attention dropout does not apply: the n x n weights are never formed (the capability is not
declared, and the run record says the rate was not applied).
"""

from __future__ import annotations

import torch

from methods.base import AttentionMethod, check_qkv
from methods.registry import register_attention


def elu_plus_one(x: torch.Tensor) -> torch.Tensor:
    """elu(x) + 1: x + 1 for x > 0, exp(x) otherwise; positive everywhere."""
    return torch.relu(x) + torch.exp(x.clamp_max(0.0))


@register_attention("linear")
class LinearAttention(AttentionMethod):
    """Linear attention (Katharopoulos et al. 2020): phi(q) (phi(k)^T v) with phi = elu + 1."""

    def forward(self, q, k, v, key_padding_mask=None):
        check_qkv(q, k, v, key_padding_mask)
        phi_q = elu_plus_one(q)  # (B, H, n, d)
        phi_k = elu_plus_one(k)
        if key_padding_mask is not None:
            phi_k = phi_k.masked_fill(~key_padding_mask[:, None, :, None], 0.0)
        ones = torch.ones_like(v[..., :1])
        kv = torch.matmul(phi_k.transpose(-1, -2), torch.cat([v, ones], dim=-1))  # (B, H, d, d + 1)
        out = torch.matmul(phi_q, kv)  # (B, H, n, d + 1)
        numerator, denominator = out[..., :-1], out[..., -1:]
        # Only an example with no real key has denominator 0; its output is then 0, not NaN.
        return numerator / denominator.clamp_min(torch.finfo(out.dtype).tiny)

    def macs(self, seq_len: int) -> int:
        n, d = seq_len, self.head_dim
        return self.num_heads * (2 * n * d + 2 * n * d * (d + 1))
