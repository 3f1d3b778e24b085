"""Dense references of Treeformer routing, TF- and TC-Attention, for tests only.

Deliberately naive, sharing no code with methods/treeformer: routing by walking each token down the
tree in Python (`traverse`) and, for gradients, a plain-autograd DGT (`dgt_route`: ScaleBinarizer
with its identity-in-window backward, a fixed path matrix built here, softmax, a Sparser one-hot
with identity backward, the gate as the one-hot's entry at the chosen leaf); attention through an
explicit n x n score matrix with an explicit mask. Only the tree's parameters are shared.
"""

from __future__ import annotations

import math

import torch


class ScaleBinarizer(torch.autograd.Function):
    """DGT's sign quantiser: (z >= 0)·fac with fac = mean|z| (per token, over the nodes; detached).

    Backward: identity where |z| <= 1, zero elsewhere (times fac as well when `scaled`, the
    `ste="scaled"` variant of the cores).
    """

    @staticmethod
    def forward(ctx, z, scaled: bool):
        fac = z.abs().mean(dim=-1, keepdim=True)
        ctx.save_for_backward(z, fac)
        ctx.scaled = scaled
        ctx.mark_non_differentiable(fac)
        return (z >= 0).to(z.dtype) * fac, fac

    @staticmethod
    def backward(ctx, grad, _grad_fac):
        z, fac = ctx.saved_tensors
        grad = grad * (z.abs() <= 1).to(grad.dtype)
        return (grad * fac if ctx.scaled else grad), None


class Sparser(torch.autograd.Function):
    """DGT's one-hot of the argmax, with the identity as its backward."""

    @staticmethod
    def forward(ctx, probabilities):
        onehot = torch.zeros_like(probabilities)
        return onehot.scatter_(-1, probabilities.argmax(dim=-1, keepdim=True), 1.0)

    @staticmethod
    def backward(ctx, grad):
        return grad


def leaf_path_matrix(height: int, dtype: torch.dtype) -> torch.Tensor:
    """(leaves, internal nodes): +1 where the walk to the leaf turns left at the node, -1 right."""
    leaves = 2**height
    matrix = torch.zeros(leaves, leaves - 1, dtype=dtype)
    for leaf in range(leaves):
        node = leaves - 1 + leaf
        while node:
            parent = (node - 1) // 2
            matrix[leaf, parent] = 1.0 if node == 2 * parent + 1 else -1.0
            node = parent
    return matrix


def collapse(tree) -> tuple[torch.Tensor, torch.Tensor]:
    """The tree's node layer as one (W, b): z = O_L(...(O_1 (W x + b) + c_1)...) + c_L."""
    weight, bias = tree.weight, tree.bias
    for outer, outer_bias in zip(tree.overparam_weights, tree.overparam_biases):
        weight = torch.einsum("hij,hjd->hid", outer, weight)
        bias = torch.einsum("hij,hj->hi", outer, bias) + outer_bias
    return weight, bias


def dgt_route(tree, x: torch.Tensor, real: torch.Tensor | None, ste: str = "dgt"):
    """(leaf, gate), each (B, H, m), of x (B, H, m, d) by DGT in plain autograd; -1 and 0 for padding."""
    weight, bias = collapse(tree)
    z = torch.einsum("bhmd,hnd->bhmn", x, weight) + bias[None, :, None, :]
    binary, fac = ScaleBinarizer.apply(z, ste == "scaled")
    scores = torch.matmul(2 * binary - fac, leaf_path_matrix(tree.height, x.dtype).t())  # (B, H, m, L)
    if tree.and_bias is not None:
        scores = scores + tree.and_bias[None, :, None, :]
    onehot = Sparser.apply(torch.softmax(scores, dim=-1))
    leaf = onehot.argmax(dim=-1)
    gate = onehot.gather(-1, leaf.unsqueeze(-1)).squeeze(-1)
    if real is not None:
        real = real[:, None, :].expand_as(leaf)
        leaf = torch.where(real, leaf, torch.full_like(leaf, -1))
        gate = gate * real.to(gate.dtype)
    return leaf, gate


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
    weight, bias = (t.detach() for t in collapse(tree))
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


def tf_dense(core, q, k, v, key_padding_mask=None, ste: str = "dgt") -> torch.Tensor:
    """TF-Attention through an explicit n x n score matrix and mask, routed by `dgt_route`."""
    query_leaf, query_gate = dgt_route(core.tree, q, key_padding_mask, ste)
    key_leaf, key_gate = dgt_route(core.tree, k, key_padding_mask, ste)
    allowed = tf_allowed(query_leaf, key_leaf, core.height, core.empty_leaf, core.bucket_capacity)
    scores = torch.matmul(q, k.transpose(-1, -2)) / math.sqrt(q.shape[-1])  # (B, H, n, n)
    scores = scores.masked_fill(~allowed, float("-inf"))
    weights = torch.softmax(scores, dim=-1)
    weights = torch.where(allowed, weights, torch.zeros_like(weights))  # rows with no key: 0, not NaN
    gated_values = v * key_gate.unsqueeze(-1)
    return torch.matmul(weights, gated_values) * query_gate.unsqueeze(-1)


def tc_dense(core, q, k, v, key_padding_mask=None, ste: str = "dgt") -> torch.Tensor:
    """TC-Attention through an explicit n x n score matrix: node scores = (q k^T) @ membership.

    Routed by `dgt_route`; each node's score gets the tree's node log-weight (0 unless grown).
    """
    query_leaf, query_gate = dgt_route(core.tree, q, key_padding_mask, ste)
    key_leaf, key_gate = dgt_route(core.tree, k, key_padding_mask, ste)
    batch, heads, n, dim = q.shape
    height = core.height
    nodes = 2 ** (height + 1) - 1
    membership = torch.zeros(batch, heads, n, nodes, dtype=q.dtype)  # key j is aggregated into node
    on_path = torch.zeros(batch, heads, n, nodes, dtype=torch.bool)  # node on query i's path
    for b in range(batch):
        for h in range(heads):
            for j in range(n):
                if key_leaf[b, h, j] >= 0:
                    membership[b, h, j, _ancestors(int(key_leaf[b, h, j]), height)] = 1.0
                if query_leaf[b, h, j] >= 0:
                    on_path[b, h, j, _ancestors(int(query_leaf[b, h, j]), height)] = True
    weighted = membership * key_gate.unsqueeze(-1)  # (B, H, n, N) gates carry the STE gradient
    counts = weighted.sum(dim=2)  # (B, H, N)
    scale = counts if core.aggregate == "mean" else torch.ones_like(counts)
    scale = torch.where(membership.sum(dim=2) > 0, scale, torch.ones_like(scale))
    scores = torch.matmul(q, k.transpose(-1, -2)) / math.sqrt(dim)  # (B, H, n, n)
    node_scores = torch.matmul(scores, weighted) / scale.unsqueeze(-2) + core.tree.node_log_weight  # (B, H, n, N)
    allowed = on_path & (membership.sum(dim=2) > 0).unsqueeze(-2)
    node_scores = node_scores.masked_fill(~allowed, float("-inf"))
    attention = torch.softmax(node_scores, dim=-1)
    attention = torch.where(allowed, attention, torch.zeros_like(attention))
    node_values = torch.matmul(weighted.transpose(-1, -2), v) / scale.unsqueeze(-1)  # (B, H, N, d)
    return torch.matmul(attention, node_values) * query_gate.unsqueeze(-1)
