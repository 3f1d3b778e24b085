"""`nystromformer`: softmax attention through a Nyström approximation (Xiong et al. 2021).

With m landmarks q~, k~ (means of m consecutive segments of the queries and keys), attention is

    softmax(q k~^T) pinv(softmax(q~ k~^T)) softmax(q~ k^T) v        (scores scaled by d^-1/2)

where pinv is the Moore-Penrose inverse approximated by a few steps of the iteration
Z <- Z (13 I - A Z (15 I - A Z (7 I - A Z))) / 4 from Z0 = A^T / (max column sum * max row sum),
the paper's iteration. Cost: O(n m d + m^3) instead of O(n^2 d). An optional depthwise convolution of the
values along the sequence (one kernel per head) is added to the output, as in the authors' LRA code.

Conventions follow the `nystrom-attention` package so the two agree on the same inputs
(tests/test_nystromformer.py): a length that is not a multiple of m is padded at the front to the
next multiple, the padding counting as masked tokens; padded queries, keys and values are zeroed;
landmarks are means over the real tokens of their segment, masked out of the softmaxes when the
segment has none. Two deliberate differences: a landmark with no real token is left out altogether
(the package keeps a uniform row for it, which leaks into the other landmarks through the inverse),
so the result is that of the non-empty landmarks alone; and the initial scale of Z0 is the maximum
over an example's heads (the package takes it over the whole batch, which makes an example's output
depend on its batch mates).

With m >= n every token is its own landmark and the approximation is not needed: the core computes
exact softmax attention, as the authors' LRA code does.

Defaults from the authors' LRA configuration (github.com/mlpen/Nystromformer, LRA/code/lra_config.py,
"nystrom-64"): 64 landmarks, convolution kernel 35; 6 pseudo-inverse iterations, the paper's choice
and both implementations' default.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from bench_common import BenchError
from methods.base import AttentionMethod, CostOption, check_qkv
from methods.registry import register_attention


def identity(size: int, like: torch.Tensor) -> torch.Tensor:
    """(size, size) identity built from comparisons, operators the MAC counter knows to be free."""
    index = torch.arange(size, device=like.device)
    return (index[:, None] == index[None, :]).to(like.dtype)


def pad_front(x: torch.Tensor, count: int, dim: int) -> torch.Tensor:
    """x with `count` zeros before its entries along `dim` (a concatenation: free for the counter)."""
    shape = list(x.shape)
    shape[dim] = count
    return torch.cat([x.new_zeros(shape), x], dim=dim)


def iterative_pinv(a: torch.Tensor, iterations: int) -> torch.Tensor:
    """Approximate Moore-Penrose inverse of each (m, m) matrix of a (B, H, m, m) batch.

    The initial scale 1 / (||A||_1 ||A||_inf) keeps the iteration convergent; it is shared by an
    example's heads and never crosses examples.
    """
    magnitudes = a.abs()
    column_sums = magnitudes.sum(dim=-2).amax(dim=(1, 2))  # (B,)
    row_sums = magnitudes.sum(dim=-1).amax(dim=(1, 2))  # (B,)
    z = a.transpose(-1, -2) / (column_sums * row_sums)[:, None, None, None]
    eye = identity(a.shape[-1], a)
    for _ in range(iterations):
        az = torch.matmul(a, z)
        inner = torch.matmul(az, 15 * eye - torch.matmul(az, 7 * eye - az))
        z = torch.matmul(z, 13 * eye - inner) / 4
    return z


@register_attention("nystromformer")
class NystromformerAttention(AttentionMethod):
    """Nyströmformer (Xiong et al. 2021): segment-mean landmarks and an iterative pseudo-inverse."""

    # Beyond n/2 landmarks the m^3 inverse costs more than exact attention; m >= n is exact.
    cost_option = CostOption("landmarks", minimum=1, maximum_per_token=0.5)

    def __init__(
        self,
        num_heads: int,
        head_dim: int,
        max_seq_len: int,
        landmarks: int = 64,
        pinv_iterations: int = 6,
        conv_kernel: int = 35,
    ):
        super().__init__(num_heads, head_dim, max_seq_len)
        if landmarks <= 0:
            raise BenchError(f"nystromformer option landmarks must be a positive integer, got {landmarks}")
        if pinv_iterations <= 0:
            raise BenchError(f"nystromformer option pinv_iterations must be a positive integer, got {pinv_iterations}")
        if conv_kernel < 0 or (conv_kernel and conv_kernel % 2 == 0):
            raise BenchError(f"nystromformer option conv_kernel must be 0 (no convolution) or odd, got {conv_kernel}")
        self.landmarks = landmarks
        self.pinv_iterations = pinv_iterations
        self.conv_kernel = conv_kernel
        if conv_kernel:
            # (out channels = heads, in channels per group = 1, kernel along the sequence, 1 along d),
            # uniform in +-1/sqrt(fan in) as torch initialises a Conv2d.
            bound = 1 / math.sqrt(conv_kernel)
            self.conv_weight = nn.Parameter(torch.empty(num_heads, 1, conv_kernel, 1).uniform_(-bound, bound))

    def forward(self, q, k, v, key_padding_mask=None):
        check_qkv(q, k, v, key_padding_mask)
        n, d = q.shape[2], q.shape[3]
        if key_padding_mask is not None:
            padded = ~key_padding_mask[:, None, :, None]  # (B, 1, n, 1)
            q, k, v = (x.masked_fill(padded, 0.0) for x in (q, k, v))
        m = min(self.landmarks, n)
        if m == n:
            out = self.exact(q, k, v, key_padding_mask)
        else:
            out = self.nystrom(q * d**-0.5, k, v, key_padding_mask, m)
        if self.conv_kernel:
            out = out + F.conv2d(v, self.conv_weight.to(v.dtype), padding=(self.conv_kernel // 2, 0), groups=self.num_heads)
        return out

    @staticmethod
    def exact(q, k, v, key_padding_mask):
        scores = torch.matmul(q, k.transpose(-1, -2)) / math.sqrt(q.shape[-1])  # (B, H, n, n)
        if key_padding_mask is not None:
            scores = scores.masked_fill(~key_padding_mask[:, None, None, :], torch.finfo(scores.dtype).min)
        return torch.matmul(torch.softmax(scores, dim=-1), v)

    def nystrom(self, q, k, v, key_padding_mask, m: int):
        """q already scaled by d^-1/2; padded rows of q, k, v zero."""
        batch, heads, n, d = q.shape
        segment = math.ceil(n / m)
        front = segment * m - n  # padding that makes n a multiple of m
        real = torch.ones(batch, n, dtype=q.dtype, device=q.device) if key_padding_mask is None else key_padding_mask.to(q.dtype)
        counts = pad_front(real, front, dim=1).view(batch, m, segment).sum(dim=-1)  # (B, m) real tokens per segment
        q_land, k_land = (
            pad_front(x, front, dim=2).view(batch, heads, m, segment, d).sum(dim=-2) / counts.clamp_min(1)[:, None, :, None]
            for x in (q, k)
        )  # (B, H, m, d)
        lowest = torch.finfo(q.dtype).min
        key_real = real.bool()[:, None, None, :]  # (B, 1, 1, n)
        land_real = (counts > 0)[:, None, :]  # (B, 1, m)
        land_pairs = land_real[..., :, None] & land_real[..., None, :]  # (B, 1, m, m)
        kernel_1 = torch.matmul(q, k_land.transpose(-1, -2)).masked_fill(~land_real[:, :, None, :], lowest)  # (B, H, n, m)
        kernel_2 = torch.matmul(q_land, k_land.transpose(-1, -2)).masked_fill(~land_pairs, lowest)  # (B, H, m, m)
        kernel_3 = torch.matmul(q_land, k.transpose(-1, -2)).masked_fill(
            ~(land_real[..., :, None] & key_real), lowest)  # (B, H, m, n)
        kernel_1, kernel_2, kernel_3 = (torch.softmax(x, dim=-1) for x in (kernel_1, kernel_2, kernel_3))
        # An empty landmark gets an identity row and column: the inverse keeps them apart, and
        # kernel_1's zero column for it drops it, as if the core had only the non-empty landmarks.
        kernel_2 = torch.where(land_pairs, kernel_2, identity(m, q))
        pinv = iterative_pinv(kernel_2, self.pinv_iterations)
        # Right to left: (m x n)(n x d), (m x m)(m x d), (n x m)(m x d), never an n x m x m product.
        return torch.matmul(kernel_1, torch.matmul(pinv, torch.matmul(kernel_3, v)))

    def macs(self, seq_len: int) -> int:
        n, d, m = seq_len, self.head_dim, min(self.landmarks, seq_len)
        conv = n * d * self.conv_kernel
        if m == n:
            return self.num_heads * (2 * n * n * d + n * n + conv)
        kernels = 2 * n * m * d + m * m * d + 2 * n * m + m * m  # three score products and softmaxes
        inverse = self.pinv_iterations * 4 * m**3
        products = n * m * d + m * m * d + n * m * d
        return self.num_heads * (kernels + inverse + products + conv)
