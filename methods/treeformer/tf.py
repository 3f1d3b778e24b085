"""`treeformer-tf`: TF-Attention, exact softmax attention restricted to each query's leaf.

A query attends to the keys routed to its own leaf (Madaan et al. 2023). Our defaults
(docs/treeformer.md): a query whose leaf holds no key falls back to the keys of its deepest non-empty
ancestor (`empty_leaf="ancestor"`), or outputs zero (`empty_leaf="zero"`); padding is routed
nowhere and padded positions output zero.

Implementation, never n x n: queries and keys are sorted by (example, head, leaf), so the keys of
any subtree are one contiguous run. Each (example, head, leaf) with queries is a *group*: its
queries attend to one run of keys. Groups are batched by size class (both sizes rounded up to a
power of two of at least 8, above 32 also to 3·2^k: `_padded_size`; padded, masked), so a balanced
tree costs one or two batched attention products (baddbmm, softmax, bmm) and one leaf holding
everything costs what full attention on that leaf costs. With `bucket_capacity` = c (a fixed bucket
size, as Reformer's), each leaf's keys are capped at its first c keys in sequence order and its
queries split into chunks of at most c: all buckets then share one shape, one batched product; keys
beyond a leaf's capacity are attended by no one (the uncapped variant is the exact method; the tests
check both against a dense reference).

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
from methods.base import Capabilities, check_qkv
from methods.registry import register_attention
from methods.treeformer.core import TreeAttention, records_diagnostics



@dataclass
class Plan:
    """The integer work of one forward pass: padded query and key slots, class by class, and where
    each query's output lies.

    Groups of one size class share the padded shape (sq, sk); their slots are consecutive, so the
    rows of the flat (B*H*n, d) tables are gathered once for all classes and split into views.
    """

    query_rows: torch.Tensor  # (S_q,) long; padding slots repeat a valid row, their output unused
    key_rows: torch.Tensor  # (S_k,) long; padding slots repeat a valid row, masked by key_bias
    key_bias: torch.Tensor  # (S_k,) additive mask: 0 for real keys, dtype min for padding
    shapes: list[tuple[int, int, int]]  # (groups, sq, sk) of each size class, in slot order
    source: torch.Tensor  # (G*n,) query slot holding each query's output
    has_output: torch.Tensor  # (G*n,) bool: real query with keys to attend to (else output 0)
    key_counts: torch.Tensor  # (G, L) real keys per leaf
    keys_per_query_leaf: torch.Tensor  # (G, L) keys a query in that leaf attends to
    macs_spent: int  # sum over groups of queries * keys * (2d + 1): what the algorithm needs
    macs_executed: int  # padded products and softmax plus the bookkeeping cumsums
    # Per group (a leaf with queries and keys, or a chunk of one), in slot order, for the per-example
    # counts: its example, real queries and keys, and the leaf's (unchunked) query x key pairs.
    group_example: torch.Tensor
    group_queries: torch.Tensor
    group_keys: torch.Tensor
    leaf_example: torch.Tensor  # (active leaves,) their example
    leaf_pairs: torch.Tensor  # (active leaves,) queries x keys of each


@register_attention("treeformer-tf")
class TreeformerTF(TreeAttention):
    """Softmax attention of each query over the keys of its leaf (or deepest non-empty ancestor)."""

    capabilities = Capabilities(attention_dropout=True, data_dependent_shapes=True)  # the plan's group sizes

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
        self.register_buffer("subtree_bounds", subtree_bounds(height), persistent=False)  # (2, h+1, L)

    def forward(self, q, k, v, key_padding_mask=None):
        check_qkv(q, k, v, key_padding_mask)
        batch, heads, n, dim = q.shape
        groups = batch * heads
        queries, keys = self.route_queries_and_keys(q, k, key_padding_mask)
        plan = self.plan(queries.leaf.reshape(groups, n), keys.leaf.reshape(groups, n), q.dtype)
        if records_diagnostics():
            self._record_tf(plan, queries, batch, heads, n)
        if not plan.shapes:  # no real key anywhere
            return q.new_zeros(q.shape)
        table_v = v * keys.gate.unsqueeze(-1)
        # One gather per table for all size classes, then views per class: each gather's backward
        # is one index_add into a zeroed (G*n, d) table, so per-class gathers cost a table each.
        slots_q = q.reshape(groups * n, dim).index_select(0, plan.query_rows)
        slots_k = k.reshape(groups * n, dim).index_select(0, plan.key_rows)
        slots_v = table_v.reshape(groups * n, dim).index_select(0, plan.key_rows)
        sizes_q = [count * size_q for count, size_q, _ in plan.shapes]
        sizes_k = [count * size_k for count, _, size_k in plan.shapes]
        classes = zip(plan.shapes, slots_q.split(sizes_q), slots_k.split(sizes_k), slots_v.split(sizes_k),
                      plan.key_bias.split(sizes_k))
        outputs = []
        for (count, size_q, size_k), class_q, class_k, class_v, class_bias in classes:
            scores = torch.baddbmm(class_bias.view(count, 1, size_k), class_q.view(count, size_q, dim),
                                   class_k.view(count, size_k, dim).transpose(1, 2), alpha=1.0 / math.sqrt(dim))
            weights = self.drop_attention(torch.softmax(scores, dim=-1))
            outputs.append(torch.bmm(weights, class_v.view(count, size_k, dim)).view(-1, dim))  # (count*sq, d)
        flat = outputs[0] if len(outputs) == 1 else torch.cat(outputs)
        out = flat.index_select(0, plan.source).view(batch, heads, n, dim)
        return out * (queries.gate * plan.has_output.view(batch, heads, n)).unsqueeze(-1)

    @torch.no_grad()
    def plan(self, query_leaf: torch.Tensor, key_leaf: torch.Tensor, dtype: torch.dtype) -> Plan:
        """Groups, key runs and size classes from the (G, n) leaves (-1 = padding)."""
        groups, n = (int(size) for size in query_leaf.shape)
        leaves, height, device = self.leaves, self.height, query_leaf.device
        key_order, key_counts, key_start = _sort_by_leaf(key_leaf, leaves)
        query_order, query_counts, query_start = _sort_by_leaf(query_leaf, leaves)
        counts = key_counts.view(groups, leaves)
        # Keys in the subtree of each leaf's ancestor with 2^s leaves, s = 0 (the leaf) .. h (the
        # root): differences of the sorted run starts at fixed leaf bounds (one gather, no loop).
        sorted_bounds = torch.cat([key_start.view(groups, leaves), key_start.new_zeros(groups, 1)], dim=1)
        sorted_bounds[:, -1] = sorted_bounds[:, -2] + counts[:, -1]  # one past the group's last key
        ends = sorted_bounds.index_select(1, self.subtree_bounds.reshape(-1)).view(groups, 2, height + 1, leaves)
        begin = ends[:, 0]  # (G, h+1, L) first key of each subtree, in the flat sorted key order
        subtree_keys = ends[:, 1] - begin
        if self.empty_leaf == "ancestor":
            # The deepest non-empty subtree. Subtrees nest, so the non-empty ones are the largest
            # spans: the first is h+1 minus their number (clamped to the root when all are empty).
            non_empty = (subtree_keys > 0).sum(dim=1, keepdim=True)  # (G, 1, L)
            span_bits = (height + 1 - non_empty).clamp_(max=height)
        else:
            span_bits = torch.zeros(groups, 1, leaves, dtype=torch.long, device=device)
        run_length = subtree_keys.gather(1, span_bits).squeeze(1)  # (G, L); 0 where even that is empty
        run_start = begin.gather(1, span_bits).squeeze(1)  # (G, L) into the flat sorted key order
        if self.bucket_capacity is not None:
            run_length = run_length.clamp(max=self.bucket_capacity)

        active = ((query_counts > 0) & (run_length.reshape(-1) > 0)).nonzero().squeeze(1)
        query_len, query_begin = query_counts.index_select(0, active), query_start.index_select(0, active)
        key_len, key_begin = run_length.reshape(-1).index_select(0, active), run_start.reshape(-1).index_select(0, active)
        leaf_pairs = query_len * key_len
        leaf_example = active // (self.num_heads * leaves)  # rows of the flat (B*H*L) leaves
        group_example = leaf_example
        macs_spent = int(leaf_pairs.sum()) * (2 * self.head_dim + 1)
        bookkeeping = 2 * groups * leaves  # the cumsums of the two sorts

        if self.bucket_capacity is not None:
            capacity = self.bucket_capacity
            chunks = (query_len + capacity - 1) // capacity
            bookkeeping += len(chunks)  # chunks.cumsum below
            owner = torch.repeat_interleave(torch.arange(len(active), device=device), chunks)
            chunk = torch.arange(len(owner), device=device) - (chunks.cumsum(0) - chunks)[owner]
            query_begin = query_begin[owner] + chunk * capacity
            query_len = (query_len[owner] - chunk * capacity).clamp(max=capacity)
            key_begin, key_len = key_begin[owner], key_len[owner]
            group_example = leaf_example[owner]
            # One class: every chunk padded to the fullest chunk and the longest key run.
            size_q = query_len.new_full(query_len.shape, int(query_len.max()) if len(owner) else 0)
            size_k = key_len.new_full(key_len.shape, int(key_len.max()) if len(owner) else 0)
        else:
            size_q, size_k = _padded_size(query_len), _padded_size(key_len)
        classes = size_q * (2 * n + 1) + size_k
        order = torch.argsort(classes, stable=True)  # groups of one class become consecutive
        values, members = torch.unique_consecutive(classes.index_select(0, order), return_counts=True)
        shapes = [(count, *divmod(value, 2 * n + 1)) for value, count in zip(values.tolist(), members.tolist())]
        query_begin, query_len, size_q, key_begin, key_len, size_k = (
            x.index_select(0, order) for x in (query_begin, query_len, size_q, key_begin, key_len, size_k)
        )
        query_rows, query_valid = _slots(query_order, query_begin, query_len, size_q)
        key_rows, key_valid = _slots(key_order, key_begin, key_len, size_k)
        bookkeeping += 2 * len(order)  # the two cumsums of `_slots`
        key_bias = torch.zeros(key_valid.shape, dtype=dtype, device=device).masked_fill_(~key_valid, torch.finfo(dtype).min)

        slots = query_valid.nonzero().squeeze(1)
        queries_here = query_rows.index_select(0, slots)
        source = torch.zeros(groups * n, dtype=torch.long, device=device)
        source[queries_here] = slots
        has_output = torch.zeros(groups * n, dtype=torch.bool, device=device)
        has_output[queries_here] = True
        products = sum(count * sq * sk for count, sq, sk in shapes)
        macs_executed = products * (2 * self.head_dim + 1) + bookkeeping  # baddbmm, softmax, bmm
        return Plan(query_rows, key_rows, key_bias, shapes, source, has_output, counts, run_length,
                    macs_spent, macs_executed, group_example.index_select(0, order), query_len, key_len,
                    leaf_example, leaf_pairs)

    @torch.no_grad()
    def _record_tf(self, plan: Plan, queries, batch: int, heads: int, n: int) -> None:
        leaf = queries.leaf.reshape(batch * heads, n)
        reached = plan.keys_per_query_leaf.gather(1, leaf.clamp(min=0)) * (leaf >= 0)  # (G, n)
        key_counts = plan.key_counts.view(batch, heads, self.leaves)
        real_keys = key_counts[:, 0].sum(dim=-1)  # (B,)
        executed = self.routing_macs(n, batch) + plan.macs_executed
        algorithmic = self.algorithmic_routing_macs(n) * batch + plan.macs_spent
        query_real = (leaf >= 0).view(batch, heads, n)
        self._record(key_counts, reached.view(batch, heads, n).float(), real_keys, query_real, executed, algorithmic,
                     lambda: self._macs_alone(plan, batch, n))

    def _macs_alone(self, plan: Plan, batch: int, n: int) -> tuple[torch.Tensor, torch.Tensor]:
        """What `plan` would execute and need for each example in a batch of its own: the groups
        are per example already; only the padding of the bucketed variant (to the fullest chunk of
        the batch) and the per-call routing terms change with the batch."""
        def per_example(values: torch.Tensor, example: torch.Tensor) -> torch.Tensor:
            return torch.zeros(batch, dtype=torch.float64, device=values.device).index_add_(0, example, values.double())

        groups = torch.bincount(plan.group_example, minlength=batch).double()
        bookkeeping = 2 * self.num_heads * self.leaves + 2 * groups  # as in `plan`, at batch 1
        if self.bucket_capacity is None:
            padded = _padded_size(plan.group_queries) * _padded_size(plan.group_keys)
            products = per_example(padded, plan.group_example)
        else:
            def fullest(lengths: torch.Tensor) -> torch.Tensor:
                return lengths.new_zeros(batch).scatter_reduce_(0, plan.group_example, lengths, "amax").double()

            products = groups * fullest(plan.group_queries) * fullest(plan.group_keys)
            bookkeeping += torch.bincount(plan.leaf_example, minlength=batch).double()  # the chunk counts' cumsum
        row = 2 * self.head_dim + 1
        executed = self.routing_macs(n) + products * row + bookkeeping
        algorithmic = self.algorithmic_routing_macs(n) + per_example(plan.leaf_pairs, plan.leaf_example) * row
        return executed, algorithmic

    def _balanced_leaf(self, seq_len: int) -> int:
        return max(1, math.ceil(seq_len / self.leaves))

    def macs(self, seq_len: int) -> int:
        """Executed in evaluation on a *balanced* tree: every leaf holds n/2^h queries and keys.

        The executed count depends on the leaf sizes the data produces, in both variants (the
        exact one pads each leaf to its size class, `_padded_size`; the bucketed one pads chunks to the fullest
        and counts one chunk per started bucket); `diagnostics()["attention_macs_spent"]` reports
        what a forward pass actually executed.
        """
        per_leaf = self._balanced_leaf(seq_len)
        dim = self.head_dim
        # See `plan`: the cumsums of the two sorts, of the chunk counts, and two of `_slots` per
        # group (a leaf, or a chunk of one).
        if self.bucket_capacity is None:
            size = int(_padded_size(torch.tensor([per_leaf]))[0])
            attention = self.leaves * (2 * size * size * dim + size * size)
            bookkeeping = 2 * self.leaves + 2 * self.leaves
        else:
            size = min(self.bucket_capacity, per_leaf)
            chunks = self.leaves * math.ceil(per_leaf / self.bucket_capacity)
            attention = chunks * (2 * size * size * dim + size * size)
            bookkeeping = 2 * self.leaves + self.leaves + 2 * chunks
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
    exponent = torch.ceil(torch.log2(values.double())).long()
    return torch.ones_like(exponent) << exponent


# Groups are padded to at least this many queries and keys, and sizes above FINE_CLASSES_ABOVE to
# the next of 2^k and 3·2^(k-1) rather than to the next power of two.
MIN_PADDED_SIZE = 8
FINE_CLASSES_ABOVE = 32


def _padded_size(values: torch.Tensor) -> torch.Tensor:
    """The padded length of a size class holding `values` queries or keys (>= 1).

    Powers of two from MIN_PADDED_SIZE up to FINE_CLASSES_ABOVE; above it also 3·2^(k-1) (48, 96,
    192, ...), so a large group is padded by at most 1.5x instead of 2x per side. Small groups share
    few classes: every class is a batched product, forward and backward. At the quick suite's shape
    (n=128, 32 leaves, about 4 tokens per leaf at the start; counted on the untrained model of
    scripts/bench_treeformer.py) classes of 1, 2 and 4 made about 40 classes per layer where a floor
    of 8 makes 11-12, for about twice the (small) padded products; a floor of 16 would make 5-6 for
    five times them. A large group's padding is the bulk of its product (in results/quick's TF
    records at n=128 the fullest leaf holds 82-128 tokens on recall, 15-30 on ListOps:
    `max_leaf_occupancy`).
    """
    power = _next_power_of_two(values.clamp(min=MIN_PADDED_SIZE))
    three_quarters = power * 3 // 4
    return torch.where((values > FINE_CLASSES_ABOVE) & (values <= three_quarters), three_quarters, power)


def subtree_bounds(height: int) -> torch.Tensor:
    """(2, h+1, L) long: at [0, s, i] the first leaf of the subtree with 2^s leaves that holds
    leaf i, at [1, s, i] one past its last leaf."""
    leaves = torch.arange(2**height)
    first = torch.stack([(leaves >> span) << span for span in range(height + 1)])
    return torch.stack([first, first + (1 << torch.arange(height + 1)).unsqueeze(1)])


def _slots(order: torch.Tensor, begin: torch.Tensor, length: torch.Tensor, size: torch.Tensor):
    """Rows order[begin + i] for i < size of each group, all groups' slots in one flat tensor, and
    whether each slot is real (i < length); padding slots repeat the group's first row."""
    total = int(size.sum())
    offsets = size.cumsum(0) - size  # first slot of each group
    group = torch.repeat_interleave(torch.arange(len(size), device=order.device), size, output_size=total)
    position = torch.arange(total, device=order.device) - offsets.index_select(0, group)  # slot within its group
    valid = position < length.index_select(0, group)
    first = begin.index_select(0, group)
    return order.index_select(0, first + torch.where(valid, position, torch.zeros_like(position))), valid
