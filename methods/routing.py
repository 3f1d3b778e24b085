"""`routing`: Routing Transformer attention, queries and keys routed by online k-means (Roy et al. 2021).

Each head keeps C unit centroids. Queries and keys are unit-normalised and compared with them;
each cluster takes the `window` queries and the `window` keys most similar to its centroid
(balanced clusters, as in the authors' implementation, so every cluster costs the same), and
softmax attention runs within each cluster. A query picked by several clusters gets the mean of
their outputs; a query picked by none gets zero (the layer's residual carries it). In training the
centroids move towards the unit mean of the queries and keys assigned to them (nearest centroid),
by an exponential moving average (decay `ema_decay`), without gradients.

Conventions follow the `routing-transformer` package's KmeansAttention (separate queries and keys,
no causal mask, no memory keys), so the two agree on the same centroids
(tests/test_routing.py). Padding: padded queries and keys are ranked last by every cluster, so
the real tokens a cluster takes do not depend on the padding, and padded keys get no weight.
Centroids are random unit vectors at construction (the package instead initialises them from the
first batch by k-means).

Cost per head: 2 n C d to compare queries and keys with the centroids and C window^2 (2 d + 1)
within the clusters, plus C window (d + 1) to gather outputs back: the same on every input. The
cost option is `window` (cluster size) at a fixed number of clusters, in which the cost grows;
with C = n / window tied, it would fall and then rise.

Defaults: C = round(sqrt(max_seq_len)) clusters and window = ceil(n / C), so the clusters hold n
tokens in all: about sqrt(n) clusters, the paper's setting for O(n^1.5 d) attention.
The LRA paper does not run the Routing Transformer, so there is no LRA configuration to follow.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from bench_common import BenchError
from methods.base import AttentionMethod, Capabilities, CostOption, check_qkv
from methods.reformer import unit_rows
from methods.registry import register_attention


@register_attention("routing")
class RoutingAttention(AttentionMethod):
    """Routing Transformer (Roy et al. 2021): attention within balanced online k-means clusters."""

    capabilities = Capabilities(attention_dropout=True)
    cost_option = CostOption("window", minimum=1, maximum_per_token=1.0)

    def __init__(
        self,
        num_heads: int,
        head_dim: int,
        max_seq_len: int,
        clusters: int = 0,
        window: int = 0,
        ema_decay: float = 0.999,
    ):
        super().__init__(num_heads, head_dim, max_seq_len)
        if clusters < 0 or window < 0:
            raise BenchError(f"routing options clusters and window must be >= 0 (0 = default), got {clusters}, {window}")
        if not 0 <= ema_decay < 1:
            raise BenchError(f"routing option ema_decay must be in [0, 1), got {ema_decay}")
        self.clusters = clusters or max(1, round(math.sqrt(max_seq_len)))
        self.window = window
        self.ema_decay = ema_decay
        self.register_buffer("centroids", unit_rows(torch.randn(num_heads, self.clusters, head_dim)))

    def window_for(self, seq_len: int) -> int:
        return min(self.window, seq_len) if self.window else math.ceil(seq_len / self.clusters)

    def forward(self, q, k, v, key_padding_mask=None):
        check_qkv(q, k, v, key_padding_mask)
        batch, heads, n, d = q.shape
        window, clusters = self.window_for(n), self.clusters
        with torch.no_grad():  # routing is a discrete choice: no gradient flows through it
            unit_q, unit_k = unit_rows(q), unit_rows(k)
            centroids = self.centroids.to(q.dtype).transpose(-1, -2)  # (H, d, C)
            q_similarity = torch.matmul(unit_q, centroids)  # (B, H, n, C)
            k_similarity = torch.matmul(unit_k, centroids)
        if self.training:
            self.update_centroids(unit_q, unit_k, q_similarity, k_similarity, key_padding_mask)
        if key_padding_mask is not None:
            padded = ~key_padding_mask[:, None, :, None]
            q_similarity = q_similarity.masked_fill(padded, -math.inf)
            k_similarity = k_similarity.masked_fill(padded, -math.inf)

        def members(similarity):  # (B, H, C * window): each cluster's closest tokens, cluster by cluster
            return similarity.topk(window, dim=2).indices.transpose(-1, -2).reshape(batch, heads, clusters * window)

        def take(x, index):  # (B, H, n, e) -> (B, H, C, window, e)
            picked = x.gather(2, index.unsqueeze(-1).expand(-1, -1, -1, x.shape[-1]))
            return picked.view(batch, heads, clusters, window, x.shape[-1])

        q_index, k_index = members(q_similarity), members(k_similarity)
        scores = torch.matmul(take(q, q_index), take(k, k_index).transpose(-1, -2)) / math.sqrt(d)  # (B, H, C, w, w)
        if key_padding_mask is not None:
            key_real = key_padding_mask[:, None, :].expand(-1, heads, -1).gather(2, k_index)
            scores = scores.masked_fill(~key_real.view(batch, heads, clusters, 1, window), torch.finfo(scores.dtype).min)
        weights = self.drop_attention(torch.softmax(scores, dim=-1))
        out = torch.matmul(weights, take(v, k_index)).reshape(batch, heads, clusters * window, d)

        total = q.new_zeros(batch, heads, n, d).scatter_add(2, q_index.unsqueeze(-1).expand(-1, -1, -1, d), out)
        picked = q.new_zeros(batch, heads, n).scatter_add(2, q_index, torch.ones_like(q_index, dtype=q.dtype))
        return total / picked.clamp_min(1).unsqueeze(-1)

    @torch.no_grad()
    def update_centroids(self, unit_q, unit_k, q_similarity, k_similarity, key_padding_mask) -> None:
        """One moving-average step of spherical k-means on this batch's real queries and keys."""
        points = torch.cat([unit_q, unit_k], dim=2)  # (B, H, 2n, d)
        nearest = torch.cat([q_similarity, k_similarity], dim=2).argmax(dim=-1)  # (B, H, 2n)
        membership = F.one_hot(nearest, self.clusters).to(points.dtype)  # (B, H, 2n, C)
        if key_padding_mask is not None:
            membership = membership * torch.cat([key_padding_mask, key_padding_mask], dim=1)[:, None, :, None]
        sums = torch.einsum("bhnc,bhnd->hcd", membership, points)
        empty = membership.sum(dim=(0, 2))[..., None] == 0  # (H, C, 1): a cluster nobody chose keeps its centroid
        target = torch.where(empty, self.centroids, unit_rows(sums).to(self.centroids.dtype))
        self.centroids.copy_(unit_rows(self.ema_decay * self.centroids + (1 - self.ema_decay) * target))

    def macs(self, seq_len: int) -> int:
        n, d, c, w = seq_len, self.head_dim, self.clusters, self.window_for(seq_len)
        routing = 2 * n * c * d  # queries and keys against the centroids
        attention = c * w * w * (2 * d + 1)  # scores, softmax, weighted values per cluster
        gather_back = c * w * (d + 1)  # scatter_add of the outputs and of the pick counts
        return self.num_heads * (routing + attention + gather_back)
