"""Dense references of Treeformer routing, TF- and TC-Attention, for tests only.

Deliberately naive: routing by walking each token down the tree in Python, and attention through
an explicit n x n score matrix with an explicit mask, so they share no code path with the
efficient implementations (only the tree's parameters and its STE gates, which carry gradients).
"""

from __future__ import annotations

import math

import torch


def traverse_one(weight: torch.Tensor, bias: torch.Tensor, x: torch.Tensor) -> int:
    """Leaf of one token x (d,) in one head's tree (W (N, d), b (N,)): z >= 0 goes left."""
    nodes = weight.shape[0]
    node = 0
    while node < nodes:
        z = float(weight[node] @ x + bias[node])
        node = 2 * node + 1 if z >= 0 else 2 * node + 2
    return node - nodes


def traverse(tree, x: torch.Tensor, real: torch.Tensor | None = None) -> torch.Tensor:
    """(B, H, m) leaves of x (B, H, m, d) by explicit walks; -1 for padding."""
    weight, bias = (t.detach() for t in tree.collapsed())
    batch, heads, m, _ = x.shape
    leaves = torch.empty(batch, heads, m, dtype=torch.long)
    for b in range(batch):
        for h in range(heads):
            for i in range(m):
                if real is not None and not bool(real[b, i]):
                    leaves[b, h, i] = -1
                else:
                    leaves[b, h, i] = traverse_one(weight[h], bias[h], x[b, h, i])
    return leaves


def _ancestors(leaf: int, height: int) -> list[int]:
    """Breadth-first node ids from the root down to the leaf's own node."""
    node = 2**height - 1 + leaf
    path = [node]
    while node:
        node = (node - 1) // 2
        path.append(node)
    return path[::-1]


def _leaves_under(node: int, height: int) -> set[int]:
    level = int(math.floor(math.log2(node + 1)))
    span = 2 ** (height - level)
    first = (node - (2**level - 1)) * span
    return set(range(first, first + span))


def tf_allowed(q_leaf, k_leaf, height: int, empty_leaf: str, capacity: int | None) -> torch.Tensor:
    """(B, H, n, n) bool: query i may attend key j (leaf-restricted, with the empty-leaf policy)."""
    batch, heads, n = q_leaf.shape
    allowed = torch.zeros(batch, heads, n, n, dtype=torch.bool)
    for b in range(batch):
        for h in range(heads):
            keys = k_leaf[b, h].tolist()
            for i, leaf in enumerate(q_leaf[b, h].tolist()):
                if leaf < 0:
                    continue
                path = _ancestors(leaf, height)
                candidates = path[::-1] if empty_leaf == "ancestor" else path[-1:]
                chosen = []
                for node in candidates:  # deepest first
                    under = _leaves_under(node, height)
                    chosen = [j for j, kl in enumerate(keys) if kl in under]
                    if chosen:
                        break
                chosen.sort(key=lambda j: (keys[j], j))  # sorted by leaf, then position
                if capacity is not None:
                    chosen = chosen[:capacity]
                allowed[b, h, i, chosen] = True
    return allowed


def tf_dense(core, q, k, v, key_padding_mask=None) -> torch.Tensor:
    """TF-Attention through an explicit n x n score matrix and mask."""
    queries, keys = core.route_queries_and_keys(q, k, key_padding_mask)
    allowed = tf_allowed(queries.leaf, keys.leaf, core.height, core.empty_leaf, core.bucket_capacity)
    scores = torch.matmul(q, k.transpose(-1, -2)) / math.sqrt(q.shape[-1])  # (B, H, n, n)
    scores = scores.masked_fill(~allowed, float("-inf"))
    weights = torch.softmax(scores, dim=-1)
    weights = torch.where(allowed, weights, torch.zeros_like(weights))  # rows with no key: 0, not NaN
    gated_values = v * keys.gate.unsqueeze(-1)
    return torch.matmul(weights, gated_values) * queries.gate.unsqueeze(-1)


def tc_dense(core, q, k, v, key_padding_mask=None) -> torch.Tensor:
    """TC-Attention through an explicit n x n score matrix: node scores = (q k^T) @ membership."""
    queries, keys = core.route_queries_and_keys(q, k, key_padding_mask)
    batch, heads, n, dim = q.shape
    height = core.height
    nodes = 2 ** (height + 1) - 1
    membership = torch.zeros(batch, heads, n, nodes, dtype=q.dtype)  # key j is aggregated into node
    on_path = torch.zeros(batch, heads, n, nodes, dtype=torch.bool)  # node on query i's path
    for b in range(batch):
        for h in range(heads):
            for j in range(n):
                if keys.leaf[b, h, j] >= 0:
                    membership[b, h, j, _ancestors(int(keys.leaf[b, h, j]), height)] = 1.0
                if queries.leaf[b, h, j] >= 0:
                    on_path[b, h, j, _ancestors(int(queries.leaf[b, h, j]), height)] = True
    weighted = membership * keys.gate.unsqueeze(-1)  # (B, H, n, N) gates carry the STE gradient
    counts = weighted.sum(dim=2)  # (B, H, N)
    scale = counts if core.aggregate == "mean" else torch.ones_like(counts)
    scale = torch.where(membership.sum(dim=2) > 0, scale, torch.ones_like(scale))
    scores = torch.matmul(q, k.transpose(-1, -2)) / math.sqrt(dim)  # (B, H, n, n)
    node_scores = torch.matmul(scores, weighted) / scale.unsqueeze(-2)  # (B, H, n, N)
    allowed = on_path & (membership.sum(dim=2) > 0).unsqueeze(-2)
    node_scores = node_scores.masked_fill(~allowed, float("-inf"))
    attention = torch.softmax(node_scores, dim=-1)
    attention = torch.where(allowed, attention, torch.zeros_like(attention))
    node_values = torch.matmul(weighted.transpose(-1, -2), v) / scale.unsqueeze(-1)  # (B, H, N, d)
    return torch.matmul(attention, node_values) * queries.gate.unsqueeze(-1)
