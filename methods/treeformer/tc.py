"""`treeformer-tc`: TC-Attention, the coarse form with dense gradients (Madaan et al. 2023).

Every node of the tree (internal nodes and leaves, 2^(h+1) - 1 of them) holds an aggregate of the
keys and values routed through it: their mean (default) or sum. A query attends, with a softmax,
over the nodes on its own root-to-leaf path; empty nodes are excluded. The root holds every key,
so every real key and value receives gradient.

Implementation, O(n·d) aggregation and never n x n:
1. each real key adds g·[k, v, 1] into its leaf (one index_add, or C++ loops with "fused-path";
   g is the STE gate, 1 forward);
2. internal nodes are the sums of their two children, level by level up to the root;
3. attention over the path, in one of three ways (`implementation`):
   - "all-nodes": one matrix product scores every query against all node aggregates; the softmax
     runs over the h+1 scores of the query's path (gathered by a fixed leaf -> path table), and the
     weights are scattered back for one product with the node values: 2^(h+1)/(h+1) times the
     MACs the path needs, but two BLAS calls, fast on CPU while 2^h is small against n;
   - "path": each query gathers its h+1 path nodes and attends over them alone, O(n·h·d); without a
     backward the routing also evaluates only the h hyperplanes on each token's path;
   - "fused-path": the same MACs as "path", with the gathers fused into the products by C++ loops
     that never write the gathered rows (`fused_path`; C++, CPU only, built on first use);
   - "auto" (default): the fastest measured for this device, n and h among those this machine can
     run (`tc_choice`).
Each query's attention weights are multiplied by its gate (the STE gate, 1 forward, 0 for padded
queries) before they meet the values: the same output as gating the output, without a pass over it.
"""

from __future__ import annotations

from typing import Literal

import torch

import methods.treeformer.kernels as kernels
from bench_common import BenchError
from methods.base import check_qkv
from methods.registry import register_attention
from methods.treeformer.core import TreeAttention, inverse_sqrt, records_diagnostics
from methods.treeformer.fused_path import LeafSums, PathMix, PathWeights
from methods.treeformer.tc_choice import choose_implementation
from methods.treeformer.tree import ancestor_table, needs_grad, path_node_table



@register_attention("treeformer-tc")
class TreeformerTC(TreeAttention):
    """Each query attends over the mean (or sum) key/value aggregates of its root-to-leaf path."""

    def __init__(
        self,
        num_heads: int = 0,
        head_dim: int = 0,
        max_seq_len: int = 0,
        height: int = 5,
        aggregate: Literal["mean", "sum"] = "mean",
        overparam_layers: int = 0,
        ste: Literal["dgt", "scaled"] = "dgt",
        and_bias: bool = False,
        implementation: Literal["auto", "all-nodes", "path", "fused-path"] = "auto",
    ):
        super().__init__(num_heads, head_dim, max_seq_len, height, overparam_layers, ste, and_bias)
        self.aggregate = aggregate
        self.implementation = implementation
        self.register_buffer("ancestors", ancestor_table(height), persistent=False)  # (L+1, 2L-1)
        self.register_buffer("path_nodes", path_node_table(height), persistent=False)  # (L+1, h+1)

    def executed_implementation(self, seq_len: int) -> str:
        """"all-nodes", "path" or "fused-path": the option, or for "auto" the choice for this device,
        n and h."""
        device = self.ancestors.device.type
        fused = kernels.run_on(device)
        if self.implementation == "fused-path" and not fused:
            raise BenchError(f"treeformer-tc option 'implementation': 'fused-path' needs the CPU and its C++ kernels "
                             f"where they built (device {device}); use 'auto', 'all-nodes' or 'path'")
        if self.implementation != "auto":
            return self.implementation
        return choose_implementation(device, seq_len, self.height, fused=fused)

    def forward(self, q, k, v, key_padding_mask=None):
        check_qkv(q, k, v, key_padding_mask)
        batch, heads, n, dim = q.shape
        groups = batch * heads
        implementation = self.executed_implementation(n)
        walk = implementation != "all-nodes"
        queries, keys = self.route_queries_and_keys(q, k, key_padding_mask, walk=walk)
        sums = self.node_sums(keys, k, v, fused=implementation == "fused-path")  # (G, 2L-1, 2d+1)
        counts = sums[..., -1]  # (G, 2L-1), 1.0 per key forward
        node_keys, node_values = sums[..., :dim], sums[..., dim : 2 * dim]
        if self.aggregate == "mean":
            denominator = torch.where(counts > 0, counts, torch.ones_like(counts)).unsqueeze(-1)
            node_keys, node_values = node_keys / denominator, node_values / denominator
        node_keys, node_values = node_keys.to(q.dtype), node_values.to(q.dtype)  # summed in >= fp32
        leaf = queries.leaf.reshape(groups, n)
        path = self.path_nodes.index_select(0, torch.where(leaf >= 0, leaf, self.leaves).reshape(-1)).view(groups, n, -1)
        bias = self.path_bias(path, counts, q.dtype)  # (G, n, h+1)
        # The gate is 0 for padded queries, whose all-masked rows are thereby dropped.
        operands = (q.reshape(groups, n, dim), path, bias, queries.gate.reshape(groups, n), node_keys, node_values)
        if implementation == "fused-path" and not torch.jit.is_tracing():
            attended = self.attend_fused_path(*operands)
        elif implementation != "all-nodes":  # "path", and "fused-path" for a FLOP tracer (blind to C++ loops)
            attended = self.attend_path(*operands)
        else:
            attended = self.attend_all_nodes(*operands)
        out = attended.view(batch, heads, n, dim)
        if records_diagnostics():
            self._record_tc(queries, counts.view(batch, heads, -1), n, implementation)
        return out

    def attend_all_nodes(self, q, path, bias, gate, node_keys, node_values) -> torch.Tensor:
        """(G, n, d): one product scores each query q (G, n, d) against every node aggregate; the
        softmax then runs over the h+1 scores of its path alone (gathered), and the gated weights go
        back to their nodes (scattered into zeros) for one product with the node values: two BLAS
        calls, fast on CPU while 2^h is small against n, and no (G, n, 2L-1) mask or softmax.

        Laid out nodes first, (G, nodes, n): a softmax over h+1 entries along the last dimension
        ran several times slower on CPU than along a middle one, which vectorises across queries.
        """
        path, bias = path.transpose(1, 2).contiguous(), bias.transpose(1, 2)  # (G, h+1, n)
        scores = torch.bmm(node_keys, q.transpose(1, 2))  # (G, 2L-1, n)
        path_scores = scores.gather(1, path).mul_(inverse_sqrt(q.shape[-1])).add_(bias)  # (G, h+1, n)
        weights = self.drop_attention(torch.softmax(path_scores, dim=1)) * gate.unsqueeze(1)
        spread = scores.new_zeros(scores.shape).scatter_(1, path, weights)  # (G, 2L-1, n), h+1 non-zero per query
        return torch.bmm(spread.transpose(1, 2), node_values)

    def attend_fused_path(self, q, path, bias, gate, node_keys, node_values) -> torch.Tensor:
        """(G, n, d): the path attention with the gathers fused into the products (`fused_path`)."""
        weights = PathWeights.apply(node_keys, path, q.contiguous(), bias, inverse_sqrt(q.shape[-1]))  # (G, n, h+1)
        weights = self.drop_attention(weights) * gate.unsqueeze(-1)
        return PathMix.apply(node_values, path, weights)

    def attend_path(self, q, path, bias, gate, node_keys, node_values) -> torch.Tensor:
        """(G, n, d): each query q (G, n, d) attends over the h+1 nodes of its path alone.

        The path's aggregates are gathered per query ((G*n, h+1, d), no all-node product).
        """
        groups, n, dim = q.shape
        nodes = node_keys.shape[1]
        rows = (path + torch.arange(groups, device=q.device).view(groups, 1, 1) * nodes).reshape(-1)
        path_keys = node_keys.reshape(-1, dim).index_select(0, rows).view(groups * n, -1, dim)  # (G*n, h+1, d)
        path_values = node_values.reshape(-1, dim).index_select(0, rows).view(groups * n, -1, dim)
        scores = torch.baddbmm(bias.view(groups * n, -1, 1), path_keys, q.reshape(groups * n, dim, 1), alpha=inverse_sqrt(dim))
        weights = self.drop_attention(torch.softmax(scores, dim=1)) * gate.view(-1, 1, 1)  # (G*n, h+1, 1)
        return torch.bmm(weights.transpose(1, 2), path_values).view(groups, n, dim)

    def path_bias(self, path: torch.Tensor, counts: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
        """(G, n, h+1) additive scores of each query's path nodes `path` (G, n, h+1): the node's
        log-weight (0 unless the tree was grown) at non-empty nodes, dtype min at empty ones.

        Padded queries keep leaf 0's path unmasked: their output is multiplied by a gate of 0,
        which also stops their gradient, so masking them would only cost time.
        """
        groups = path.shape[0]
        allowed = (counts > 0).gather(1, path.view(groups, -1)).view(path.shape)
        log_weight = self.tree.node_log_weight.to(dtype).index_select(0, path.reshape(-1)).view(path.shape)
        return log_weight.masked_fill_(~allowed, torch.finfo(dtype).min)

    def node_sums(self, keys, k: torch.Tensor, v: torch.Tensor, fused: bool) -> torch.Tensor:
        """(G = B*H, 2L-1, 2d+1) breadth-first node sums of g·[k, v, 1] over the keys routed through;
        the leaves' sums by the C++ loops when `fused` (and no FLOP tracer, blind to them, runs)."""
        batch, heads, _, dim = k.shape
        groups = batch * heads
        if fused and not torch.jit.is_tracing():
            level = LeafSums.apply(k, v, keys.gate, keys.leaf, self.leaves)
        else:
            level = self.eager_leaf_sums(keys, k, v)
        levels = [level]
        for depth in range(self.height - 1, -1, -1):
            level = level.view(groups, 2**depth, 2, 2 * dim + 1).sum(dim=2)  # parents
            levels.append(level)
        return torch.cat(levels[::-1], dim=1)

    def eager_leaf_sums(self, keys, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        """(G, L, 2d+1) leaf sums of g·[k, v, 1]: one index_add of [k, v, 1] rows."""
        batch, heads, n, dim = k.shape
        groups = batch * heads
        # Slot of each key: (b*H + h) * L + leaf; padding goes to one extra slot that is dropped.
        leaf = keys.leaf.reshape(groups, n)
        base = torch.arange(groups, device=k.device).unsqueeze(1) * self.leaves
        slots = torch.where(leaf >= 0, base + leaf, groups * self.leaves).reshape(-1)
        if needs_grad(k, v, keys.gate) and not torch.jit.is_tracing():
            level = _GatedLeafSums.apply(k, v, keys.gate, slots, groups * self.leaves + 1)
        else:  # no backward wanted, or a FLOP tracer (blind inside an autograd.Function)
            level = _slot_sums(_rows(k, v), slots, groups * self.leaves + 1)
        return level[:-1].view(groups, self.leaves, 2 * dim + 1)

    @torch.no_grad()
    def _record_tc(self, queries, counts, n, implementation: str) -> None:
        """counts (B, H, 2L-1) keys per node."""
        batch, heads, _ = counts.shape
        key_counts = counts[..., self.leaves - 1 :]  # (B, H, L)
        real_keys = counts[:, 0, 0]  # the root holds every real key
        query_real = queries.leaf >= 0
        # Every real query reaches all real keys through the root; what it spends: its
        # non-empty path nodes.
        reached = query_real.to(counts.dtype) * real_keys[:, None, None]
        # Non-empty path nodes per (example, head, leaf), then counted per query by its leaf.
        per_leaf = (self.ancestors[: self.leaves] & (counts > 0).unsqueeze(-2)).sum(-1)  # (B, H, L)
        path_nodes = per_leaf.gather(-1, queries.leaf.clamp(min=0)) * query_real  # (B, H, n)
        row = 2 * self.head_dim + 1
        algorithmic = (
            self.algorithmic_routing_macs(n) * batch
            + (float(real_keys.sum()) + batch * (self.leaves - 1)) * heads * row
            + float(path_nodes.sum()) * row
        )
        walk = implementation != "all-nodes"
        alone = self.routing_macs(n, 1, walk) + self.num_heads * self._core_macs(n, implementation)
        executed = self.routing_macs(n, batch, walk) + batch * self.num_heads * self._core_macs(n, implementation)

        def alone_macs() -> tuple[torch.Tensor, torch.Tensor]:
            """Executed: the same for every example; needed: its own keys and non-empty path nodes."""
            keys_and_nodes = (real_keys.double() + self.leaves - 1) * heads * row + path_nodes.sum(dim=(1, 2)).double() * row
            return (torch.full((batch,), float(alone), dtype=torch.float64, device=real_keys.device),
                    self.algorithmic_routing_macs(n) + keys_and_nodes)

        self._record(key_counts, reached, real_keys, query_real, executed, algorithmic, alone_macs)

    def _core_macs(self, seq_len: int, implementation: str) -> int:
        """Per head, past the routing: index_add of n rows of 2d+1, then scores and weighted sum over
        all 2^(h+1)-1 nodes ("all-nodes") or the h+1 path nodes (both path implementations), and the
        softmax over the h+1 path nodes."""
        path = self.height + 1
        scored = 2 * self.leaves - 1 if implementation == "all-nodes" else path
        dim = self.head_dim
        return seq_len * (2 * dim + 1) + 2 * seq_len * scored * dim + seq_len * path

    def macs(self, seq_len: int) -> int:
        """Executed in evaluation by the implementation that runs at this length (see
        `executed_implementation`), independent of the data: routing plus `_core_macs` per head."""
        implementation = self.executed_implementation(seq_len)
        walk = implementation != "all-nodes"
        return self.routing_macs(seq_len, walk=walk) + self.num_heads * self._core_macs(seq_len, implementation)

    def algorithmic_macs(self, seq_len: int) -> int:
        """What TC needs, O(n·h·d): a traversal (h hyperplanes per token); each key added into its
        leaf and each of the 2^h - 1 internal nodes summed from its two children; each query scored
        and weighted over its h+1 path nodes."""
        path = self.height + 1
        dim = self.head_dim
        aggregation = (seq_len + self.leaves - 1) * (2 * dim + 1)
        per_head = aggregation + 2 * seq_len * path * dim + seq_len * path
        return self.algorithmic_routing_macs(seq_len) + self.num_heads * per_head


class _GatedLeafSums(torch.autograd.Function):
    """Slot sums of g·[k, v, 1] (one index_add), the gate's gradient as one row dot per key.

    The gate g is exactly 1 for real keys in the forward pass and padding goes to a dropped slot,
    so the forward adds the ungated rows; the backward applies the product rule for g. It keeps the
    [k, v, 1] rows (B*H*n, 2d+1) for that: one batched product of each row with its gradient, one
    pass where multiplying and summing over k and v apart took six.
    """

    @staticmethod
    def forward(ctx, k, v, gate, slots, num_slots):
        rows = _rows(k, v)
        ctx.save_for_backward(rows, slots)
        ctx.key_shape = k.shape
        return _slot_sums(rows, slots, num_slots)

    @staticmethod
    def backward(ctx, grad_sums):
        rows, slots = ctx.saved_tensors
        dim = ctx.key_shape[-1]
        grad_rows = grad_sums.index_select(0, slots)  # (B*H*n, 2d+1)
        grad_gate = torch.bmm(grad_rows.unsqueeze(1), rows.unsqueeze(2)).view(ctx.key_shape[:-1])  # row dots
        grad_rows = grad_rows.view(ctx.key_shape[:-1] + (2 * dim + 1,))
        # d(g·k)/dk = g: 1 for real keys; padded keys sit in the dropped slot, whose gradient is 0,
        # so grad_k and grad_v are already what the product rule gives: no (B, H, n, d) products.
        return grad_rows[..., :dim], grad_rows[..., dim : 2 * dim], grad_gate, None, None


def _rows(k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """(B*H*n, 2d+1) rows [k, v, 1], in fp32 at least.

    bf16 (autocast) has 8 significant bits: a count above 256 or a root sum over thousands of keys
    would lose digits, so half-precision rows are summed in fp32.
    """
    batch, heads, n, dim = k.shape
    dtype = torch.promote_types(k.dtype, torch.float32)
    return torch.cat([k, v, k.new_ones(batch, heads, n, 1)], dim=-1).view(-1, 2 * dim + 1).to(dtype)


def _slot_sums(rows: torch.Tensor, slots: torch.Tensor, num_slots: int) -> torch.Tensor:
    """(num_slots, 2d+1) sums of the `_rows` by slot: one index_add."""
    return rows.new_zeros(num_slots, rows.shape[-1]).index_add_(0, slots, rows)
