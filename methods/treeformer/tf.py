"""`treeformer-tf`: TF-Attention, exact softmax attention restricted to each query's leaf.

A query attends to the keys routed to its own leaf (Madaan et al. 2023). Our defaults
(docs/treeformer.md): a query whose leaf holds no key falls back to the keys of its deepest non-empty
ancestor (`empty_leaf="ancestor"`), or outputs zero (`empty_leaf="zero"`); padding is routed
nowhere and padded positions output zero.

Implementation, never n x n: queries and keys are sorted by (example, head, leaf), so the keys of
any subtree are one contiguous run. Each (example, head, leaf) with queries is a *group*: its
queries attend to one run of keys. Groups are batched by size class (both sizes rounded up to a
power of two, padded, masked), so a balanced tree costs one or two batched attention products
(baddbmm, softmax, bmm) and one leaf holding everything costs what full attention on that leaf
costs. With `bucket_capacity` = c (a fixed bucket size, as Reformer's), each leaf's keys are capped
at its first c keys in sequence order and its queries split into chunks of at most c: all buckets
then share one shape, one batched product; keys beyond a leaf's capacity are attended by no one
(the uncapped variant is the exact method; the tests check both against a dense reference).

`macs(seq_len)` is the count executed in evaluation on a balanced tree (the executed count depends
on the learned balance); `diagnostics()["attention_macs_spent"]` reports what forward passes
actually executed, `["attention_algorithmic_macs_spent"]` what the algorithm needed for them.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal, Optional

import torch

from bench_common import BenchError
from methods.base import check_qkv
from methods.registry import register_attention
from methods.treeformer.core import TreeAttention



@dataclass
class Bucket:
    """One size class of groups, as row indices into the flat (B*H*n, d) token tables."""

    query_rows: torch.Tensor  # (c, sq) long; padding slots repeat a valid row, their output unused
    key_rows: torch.Tensor  # (c, sk) long; padding slots repeat a valid row, masked by key_bias
    key_bias: torch.Tensor  # (c, 1, sk) additive mask: 0 for real keys, dtype min for padding


@dataclass
class Plan:
    """The integer work of one forward pass: buckets, where each query's output row lies, diagnostics."""

    buckets: list[Bucket]
    source: torch.Tensor  # (G*n,) row of the concatenated bucket outputs holding each query's output
    has_output: torch.Tensor  # (G*n,) bool: real query with keys to attend to (else output 0)
    key_counts: torch.Tensor  # (G, L) real keys per leaf
    keys_per_query_leaf: torch.Tensor  # (G, L) keys a query in that leaf attends to
    macs_spent: int  # sum over groups of queries * keys * (2d + 1): what the algorithm needs
    macs_executed: int  # padded bucket products and softmax plus the bookkeeping cumsums


@register_attention("treeformer-tf")
class TreeformerTF(TreeAttention):
    """Softmax attention of each query over the keys of its leaf (or deepest non-empty ancestor)."""

    def __init__(
        self,
        num_heads: int = 0,
        head_dim: int = 0,
        max_seq_len: int = 0,
        height: int = 5,
        empty_leaf: Literal["ancestor", "zero"] = "ancestor",
        bucket_capacity: Optional[int] = None,
        overparam_layers: int = 0,
        ste: Literal["dgt", "scaled"] = "dgt",
        and_bias: bool = False,
    ):
        # Types are checked by the registry (`validate_attention_options`); ranges here.
        if bucket_capacity is not None and bucket_capacity < 1:
            raise BenchError(f"attention method 'treeformer-tf' option 'bucket_capacity' must be a positive integer "
                             f"or null, got {bucket_capacity!r}")
        super().__init__(num_heads, head_dim, max_seq_len, height, overparam_layers, ste, and_bias)
        self.empty_leaf = empty_leaf
        self.bucket_capacity = bucket_capacity

    def forward(self, q, k, v, key_padding_mask=None):
        check_qkv(q, k, v, key_padding_mask)
        batch, heads, n, dim = q.shape
        groups = batch * heads
        queries, keys = self.route_queries_and_keys(q, k, key_padding_mask)
        plan = self.plan(queries.leaf.reshape(groups, n), keys.leaf.reshape(groups, n), q.dtype)
        if not plan.buckets:  # no real key anywhere
            return q.new_zeros(q.shape)
        table_q, table_k = q.reshape(groups * n, dim), k.reshape(groups * n, dim)  # (G*n, d)
        table_v = (v * keys.gate.unsqueeze(-1)).reshape(groups * n, dim)
        outputs = []
        for bucket in plan.buckets:
            count, size_q = bucket.query_rows.shape
            size_k = bucket.key_rows.shape[1]
            bucket_q = table_q.index_select(0, bucket.query_rows.reshape(-1)).view(count, size_q, dim)
            bucket_k = table_k.index_select(0, bucket.key_rows.reshape(-1)).view(count, size_k, dim)
            bucket_v = table_v.index_select(0, bucket.key_rows.reshape(-1)).view(count, size_k, dim)
            scores = torch.baddbmm(bucket.key_bias, bucket_q, bucket_k.transpose(1, 2), alpha=1.0 / math.sqrt(dim))
            outputs.append(torch.bmm(self.drop_attention(torch.softmax(scores, dim=-1)), bucket_v).view(-1, dim))  # (c*sq, d)
        flat = outputs[0] if len(outputs) == 1 else torch.cat(outputs)
        out = flat.index_select(0, plan.source).view(batch, heads, n, dim)
        out = out * (queries.gate * plan.has_output.view(batch, heads, n)).unsqueeze(-1)
        if not torch.jit.is_tracing():
            self._record_tf(plan, queries, batch, heads, n)
        return out

    @torch.no_grad()
    def plan(self, query_leaf: torch.Tensor, key_leaf: torch.Tensor, dtype: torch.dtype) -> Plan:
        """Groups, key runs and size classes from the (G, n) leaves (-1 = padding)."""
        groups, n = (int(size) for size in query_leaf.shape)
        leaves, height, device = self.leaves, self.height, query_leaf.device
        key_order, key_counts, key_start = _sort_by_leaf(key_leaf, leaves)
        query_order, query_counts, query_start = _sort_by_leaf(query_leaf, leaves)
        counts = key_counts.view(groups, leaves)
        if self.empty_leaf == "ancestor":
            # Keys under each leaf's ancestor at every level; non-empty levels run from the root down.
            per_level = [
                counts.view(groups, 2**level, leaves >> level).sum(-1).repeat_interleave(leaves >> level, dim=1)
                for level in range(height + 1)
            ]
            level = (torch.stack(per_level, dim=1) > 0).sum(dim=1) - 1  # (G, L), -1: no keys at all
        else:
            level = torch.where(counts > 0, height, -1)
        span_bits = height - level.clamp(min=0)  # the chosen node covers 2^span_bits leaves
        leaf_ids = torch.arange(leaves, device=device).expand(groups, leaves)
        first = (leaf_ids >> span_bits) << span_bits  # (G, L) first leaf of the chosen subtree
        cumulative = torch.cat([counts.new_zeros(groups, 1), counts.cumsum(dim=1)], dim=1)  # (G, L+1)
        run_length = cumulative.gather(1, first + (1 << span_bits)) - cumulative.gather(1, first)
        run_length = torch.where(level >= 0, run_length, torch.zeros_like(run_length))
        if self.bucket_capacity is not None:
            run_length = run_length.clamp(max=self.bucket_capacity)
        run_start = key_start.view(groups, leaves).gather(1, first)  # (G, L)

        active = ((query_counts > 0) & (run_length.reshape(-1) > 0)).nonzero().squeeze(1)
        query_len, query_begin = query_counts[active], query_start[active]
        key_len, key_begin = run_length.reshape(-1)[active], run_start.reshape(-1)[active]
        macs_spent = int((query_len * key_len).sum()) * (2 * self.head_dim + 1)
        bookkeeping = 3 * groups * leaves  # the cumsums of the two sorts and of `cumulative`

        buckets, valids = [], []
        if self.bucket_capacity is not None:
            capacity = self.bucket_capacity
            chunks = (query_len + capacity - 1) // capacity
            bookkeeping += len(chunks)  # chunks.cumsum below
            owner = torch.repeat_interleave(torch.arange(len(active), device=device), chunks)
            chunk = torch.arange(len(owner), device=device) - (chunks.cumsum(0) - chunks)[owner]
            query_begin = query_begin[owner] + chunk * capacity
            query_len = (query_len[owner] - chunk * capacity).clamp(max=capacity)
            key_begin, key_len = key_begin[owner], key_len[owner]
            if len(owner):
                sq, sk = int(query_len.max()), int(key_len.max())
                bucket, valid = _bucket(query_order, query_begin, query_len, sq, key_order, key_begin, key_len, sk, dtype)
                buckets.append(bucket)
                valids.append(valid)
        else:
            size_q, size_k = _next_power_of_two(query_len), _next_power_of_two(key_len)
            classes = size_q * (2 * n + 1) + size_k
            for value in torch.unique(classes).tolist():
                members = (classes == value).nonzero().squeeze(1)
                sq, sk = divmod(value, 2 * n + 1)
                bucket, valid = _bucket(
                    query_order, query_begin[members], query_len[members], sq,
                    key_order, key_begin[members], key_len[members], sk, dtype,
                )
                buckets.append(bucket)
                valids.append(valid)
        source = torch.zeros(groups * n, dtype=torch.long, device=device)
        has_output = torch.zeros(groups * n, dtype=torch.bool, device=device)
        offset = 0
        for bucket, valid in zip(buckets, valids):
            slots = valid.reshape(-1).nonzero().squeeze(1)
            queries_here = bucket.query_rows.reshape(-1)[slots]
            source[queries_here] = slots + offset
            has_output[queries_here] = True
            offset += valid.numel()
        products = sum(bucket.query_rows.numel() * bucket.key_rows.shape[1] for bucket in buckets)
        macs_executed = products * (2 * self.head_dim + 1) + bookkeeping  # baddbmm, softmax, bmm
        return Plan(buckets, source, has_output, counts, run_length, macs_spent, macs_executed)

    @torch.no_grad()
    def _record_tf(self, plan: Plan, queries, batch: int, heads: int, n: int) -> None:
        leaf = queries.leaf.reshape(batch * heads, n)
        reached = plan.keys_per_query_leaf.gather(1, leaf.clamp(min=0)) * (leaf >= 0)  # (G, n)
        key_counts = plan.key_counts.view(batch, heads, self.leaves)
        real_keys = key_counts[:, 0].sum(dim=-1)  # (B,)
        executed = self.routing_macs(n, batch) + plan.macs_executed
        algorithmic = self.algorithmic_routing_macs(n) * batch + plan.macs_spent
        query_real = (leaf >= 0).view(batch, heads, n)
        self._record(key_counts, reached.view(batch, heads, n).float(), real_keys, query_real, executed, algorithmic)

    def _balanced_leaf(self, seq_len: int) -> int:
        return max(1, math.ceil(seq_len / self.leaves))

    def macs(self, seq_len: int) -> int:
        """Executed in evaluation on a *balanced* tree: every leaf holds n/2^h queries and keys.

        The executed count depends on the leaf sizes the data produces, in both variants (the
        exact one pads each leaf to powers of two; the bucketed one pads chunks to the fullest
        and counts one chunk per started bucket); `diagnostics()["attention_macs_spent"]` reports
        what a forward pass actually executed.
        """
        per_leaf = self._balanced_leaf(seq_len)
        dim = self.head_dim
        bookkeeping = 3 * self.leaves  # see `plan`
        if self.bucket_capacity is None:
            size = 1 << (per_leaf - 1).bit_length()
            attention = self.leaves * (2 * size * size * dim + size * size)
        else:
            size = min(self.bucket_capacity, per_leaf)
            chunks = self.leaves * math.ceil(per_leaf / self.bucket_capacity)
            attention = chunks * (2 * size * size * dim + size * size)
            bookkeeping += self.leaves  # one chunk count per leaf
        return self.routing_macs(seq_len) + self.num_heads * (attention + bookkeeping)

    def algorithmic_macs(self, seq_len: int) -> int:
        """What TF needs on a balanced tree: a traversal (h hyperplanes per token) and softmax
        attention within each leaf, 2^h leaves of n/2^h tokens: about 2 n^2 d / 2^h per head."""
        per_leaf = seq_len / self.leaves
        pairs = self.leaves * per_leaf * per_leaf
        return self.algorithmic_routing_macs(seq_len) + int(self.num_heads * pairs * (2 * self.head_dim + 1))


def _sort_by_leaf(leaf: torch.Tensor, leaves: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Flat token order sorted by (group, leaf), stable in position; counts and run starts per slot."""
    groups, _ = leaf.shape
    sentinel = groups * leaves  # padding sorts after every real slot
    base = torch.arange(groups, device=leaf.device).unsqueeze(1) * leaves
    slots = torch.where(leaf >= 0, base + leaf, torch.full_like(leaf, sentinel)).reshape(-1)
    order = torch.argsort(slots, stable=True)
    counts = torch.bincount(slots, minlength=sentinel + 1)[:sentinel]  # (G*L,)
    return order, counts, counts.cumsum(0) - counts


def _next_power_of_two(values: torch.Tensor) -> torch.Tensor:
    return torch.pow(2, torch.ceil(torch.log2(values.double()))).long()


def _bucket(query_order, query_begin, query_len, sq, key_order, key_begin, key_len, sk, dtype):
    """One size class: padded row indices of the query and key runs, plus the query validity."""
    query_rows, query_valid = _runs(query_order, query_begin, query_len, sq)
    key_rows, key_valid = _runs(key_order, key_begin, key_len, sk)
    key_bias = torch.zeros(key_valid.shape, dtype=dtype, device=key_valid.device)
    key_bias = key_bias.masked_fill_(~key_valid, torch.finfo(dtype).min).unsqueeze(1)  # (c, 1, sk)
    return Bucket(query_rows, key_rows, key_bias), query_valid


def _runs(order, begin, length, size) -> tuple[torch.Tensor, torch.Tensor]:
    """(c, size) rows order[begin + i] for i < length; padding repeats the run's first row."""
    offsets = torch.arange(size, device=order.device)
    valid = offsets < length.unsqueeze(1)  # (c, size)
    positions = begin.unsqueeze(1) + torch.where(valid, offsets, torch.zeros_like(offsets))
    return order[positions], valid
