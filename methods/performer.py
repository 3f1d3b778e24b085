"""`performer`: FAVOR+ linear attention with positive orthogonal random features.

Choromanski et al. 2021 ("Rethinking Attention with Performers"): softmax(q k^T / sqrt(d)) is
approximated by phi(q) phi(k)^T with positive random features

    phi(x) = m^-1/2 * exp(w_j . x' - |x'|^2 / 2),  x' = d^-1/4 x,  j = 1..m   (paper eq. 5, lemma 1)

(the ratio m^-1/2 cancels between numerator and denominator; we leave it out)

so the output phi(q) (phi(k)^T v) / phi(q) (phi(k)^T 1) costs O(n m d) instead of O(n^2 d). The
rows w_j come in blocks of d mutually orthogonal directions, each scaled to the length of a d-dim
Gaussian vector (section 2.4), which lowers the estimator's variance.

Numerical stability (the paper's stabiliser, as in its reference code): before the exponential,
each query's row subtracts its own maximum over features and the keys subtract their maximum
over keys and features of each (example, head); both constants cancel between numerator and
denominator. A small eps is added to every feature so the denominator stays positive. The scale
d^-1/4, the ratio m^-1/2 and eps = 1e-4 (1e-3 for the ReLU kernel) follow performer-pytorch, so
the two agree given the same features (tests/test_baselines.py).

Padding: padded keys get all-zero features, so they add nothing to numerator or denominator;
they are also left out of the key maximum.

Attention dropout does not apply: FAVOR+ never forms the attention weights, so there is nothing
to drop (the official LRA Performer ignores its attention-dropout rate too); the capability is not
declared and the run record says the rate was not applied.
"""

from __future__ import annotations

import math
from typing import Literal, Optional

import torch

from bench_common import BenchError
from methods.base import AttentionMethod, CostOption, check_qkv
from methods.registry import register_attention

SOFTMAX_EPS = 1e-4
RELU_EPS = 1e-3


def orthogonal_random_features(num_features: int, dim: int) -> torch.Tensor:
    """(num_features, dim) rows: blocks of `dim` orthonormal directions, each row scaled to a
    chi_dim length, so every row is marginally N(0, I) while rows in a block are orthogonal.

    Drawn on the CPU from torch's global RNG: the same seed gives the same features on any device.
    """
    blocks = []
    for _ in range(math.ceil(num_features / dim)):
        gaussian = torch.randn(dim, dim)
        q, r = torch.linalg.qr(gaussian)
        q = q * torch.sign(torch.diagonal(r))  # sign fix: makes Q Haar-distributed
        blocks.append(q.T)  # rows orthonormal
    directions = torch.cat(blocks)[:num_features]  # (m, d)
    lengths = torch.randn(num_features, dim).norm(dim=1)  # (m,) chi_d distributed
    return directions * lengths[:, None]


@register_attention("performer")
class PerformerAttention(AttentionMethod):
    """Performer FAVOR+ (Choromanski et al. 2021): linear attention with positive orthogonal random features."""

    cost_option = CostOption("num_features", maximum_per_token=64.0)

    def __init__(
        self,
        num_heads: int,
        head_dim: int,
        max_seq_len: int,
        num_features: int = 256,
        redraw_interval: int = 1000,
        kernel: Literal["softmax", "relu"] = "softmax",
    ):
        super().__init__(num_heads, head_dim, max_seq_len)
        if num_features <= 0:
            raise BenchError(f"performer option num_features must be a positive integer, got {num_features}")
        if redraw_interval < 0:
            raise BenchError(f"performer option redraw_interval must be >= 0 (0 = never), got {redraw_interval}")
        self.num_features = num_features
        self.redraw_interval = redraw_interval
        self.kernel = kernel
        # One draw shared by the heads of this layer (as performer-pytorch); persistent, so a
        # checkpoint restores the features its weights were trained with.
        self.register_buffer("features", orthogonal_random_features(num_features, head_dim))
        self.register_buffer("forwards_since_redraw", torch.zeros((), dtype=torch.long))

    @torch.no_grad()
    def redraw_features(self) -> None:
        self.features.copy_(orthogonal_random_features(self.num_features, self.head_dim))
        self.forwards_since_redraw.zero_()

    def forward(self, q, k, v, key_padding_mask=None):
        check_qkv(q, k, v, key_padding_mask)
        if self.training and self.redraw_interval:
            # A train-mode forward is a step: each draw serves exactly redraw_interval of them.
            if int(self.forwards_since_redraw) >= self.redraw_interval:
                self.redraw_features()
            self.forwards_since_redraw += 1
        keep = None if key_padding_mask is None else key_padding_mask[:, None, :, None]  # (B, 1, n, 1)
        phi_q = self.feature_map(q, is_query=True, keep=None)  # (B, H, n, m)
        phi_k = self.feature_map(k, is_query=False, keep=keep)  # (B, H, n, m), padded rows zero
        # The normaliser rides along as a column of ones: (phi_k^T [v, 1]) gives both sums at once.
        ones = torch.ones_like(v[..., :1])
        kv = torch.matmul(phi_k.transpose(-1, -2), torch.cat([v, ones], dim=-1))  # (B, H, m, d+1)
        out = torch.matmul(phi_q, kv)  # (B, H, n, d+1)
        numerator, denominator = out[..., :-1], out[..., -1:]
        # Only an example with no real key has denominator 0; its output is then 0, not NaN.
        return numerator / denominator.clamp_min(torch.finfo(out.dtype).tiny)

    def feature_map(self, x: torch.Tensor, is_query: bool, keep: Optional[torch.Tensor]) -> torch.Tensor:
        """phi(x) for (B, H, n, d) inputs -> (B, H, n, m); rows where keep is False are zero."""
        scale = x.shape[-1] ** -0.25
        # The scale goes onto the (m, d) features rather than the (B, H, n, d) inputs: one small product.
        projected = torch.matmul(x, self.features.to(x.dtype).T * scale)  # (B, H, n, m)
        if self.kernel == "relu":
            phi = torch.relu(projected) + RELU_EPS
        else:
            half_norm = (x * x).sum(dim=-1, keepdim=True) * (scale * scale / 2)  # (B, H, n, 1)
            if is_query:
                shift = projected.amax(dim=-1, keepdim=True)  # (B, H, n, 1): cancels per query
            else:
                real = projected if keep is None else projected.masked_fill(~keep, -torch.inf)
                shift = real.amax(dim=(-2, -1), keepdim=True)  # (B, H, 1, 1): cancels per head
                # No real key at all: a shift of -inf would turn exp() into inf and its gradient NaN.
                shift = torch.where(torch.isfinite(shift), shift, torch.zeros_like(shift))
            # Both constants summed on the small tensors first: one pass over the (B, H, n, m) scores.
            exponent = projected - (half_norm + shift.detach())  # (B, H, n, m)
            # The paper's ratio m^-1/2 multiplies numerator and denominator alike, eps included, so
            # it cancels in `forward` and is left out (a pass forward and backward on q and k).
            phi = torch.exp(exponent) + SOFTMAX_EPS
        return phi if keep is None else phi.masked_fill(~keep, 0.0)

    def macs(self, seq_len: int) -> int:
        n, m, d = seq_len, self.num_features, self.head_dim
        projections = 2 * n * m * d  # q and k onto the features
        exps = 2 * n * m if self.kernel == "softmax" else 0  # relu is elementwise (0 by convention)
        products = 2 * n * m * (d + 1)  # phi_k^T [v, 1] and phi_q (...), normaliser included
        return self.num_heads * (projections + exps + products)
