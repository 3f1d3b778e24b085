"""The DGT routing tree: one learned oblique decision tree per head, shared by queries and keys.

Follows Dense Gradient Trees (Karthikeyan et al., arXiv 2102.07567; microsoft/DGT) as described in
docs/treeformer.md: a complete binary tree of height h with 2^h - 1 internal nodes numbered
breadth-first (children of j are 2j+1 and 2j+2), every node a hyperplane z = w.x + b, all nodes
computed as one linear layer; z >= 0 goes left. The forward pass is a hard tree: sign(z) scaled
by the detached mean |z|, a fixed +1/-1/0 root-to-leaf path matrix gives leaf scores, softmax,
then the one-hot argmax; without the AND bias the leaf is found by walking the signs, and the
softmax, which feeds only the backward, has a closed form there: it factorises over the levels
(`_factorised_node_grad`), so no leaf scores are ever formed.
The backward pass is DGT's straight-through estimator: hard-tanh STE at the sign and identity from
the one-hot into the softmax. DGT's `ScaleBinarizer1` returns (z >= 0)·fac with an identity
backward where |z| <= 1, and the scores use 2a - fac, so d(score input)/dz = 2 in the window and 0
outside: the scale fac shapes only the forward scores (`ste="dgt"`, the default). `ste="scaled"`
multiplies that gradient by fac as well (our earlier estimator, kept as an ablation).

Options: `and_bias=True` adds DGT's learnable per-leaf AND bias to the leaf scores; the leaf is then
the argmax of the scores (the bias may overrule the walk), so the scores run in every forward pass.

Our choices where the paper is open (docs/treeformer.md): the scale mean |z| is taken per token over the nodes, not over the
whole batch as DGT does, so an example's gradients never depend on its batch mates. The one-hot
enters attention through a *gate*: g = onehot[leaf] with the identity STE, i.e. 1 in the forward
pass and d p_leaf in the backward pass; the cores multiply each key's contribution and each
query's output by its gate, which carries the attention loss into the tree. The STE gradient
flows on into x, i.e. into q and k and so W_Q and W_K (docs/treeformer.md says why).
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass
from typing import Optional

import torch
from torch import nn

import methods.treeformer.kernels as kernels
from bench_common import BenchError

MAX_HEIGHT = 10  # 1024 leaves; the (leaves x nodes) path matrix stays small
STE_VARIANTS = ("dgt", "scaled")


def check_height(height: int, max_seq_len: int, what: str) -> None:
    """Rule: 1 <= height <= MAX_HEIGHT and 2^height <= max_seq_len (on average >= 1 token per leaf)."""
    if isinstance(height, bool) or not isinstance(height, int) or height < 1:
        raise BenchError(f"{what} option 'height' must be a positive integer, got {height!r}")
    if height > MAX_HEIGHT:
        raise BenchError(f"{what} option 'height'={height} exceeds the maximum {MAX_HEIGHT}")
    if max_seq_len and 2**height > max_seq_len:
        raise BenchError(
            f"{what} option 'height'={height} gives 2^{height}={2**height} leaves, more than "
            f"max_seq_len={max_seq_len} tokens; choose height <= {int(math.log2(max_seq_len))}"
        )


def path_matrix(height: int) -> torch.Tensor:
    """(leaves, internal nodes): +1 where the leaf lies left of the node, -1 right, 0 off its path."""
    leaves, nodes = 2**height, 2**height - 1
    matrix = torch.zeros(leaves, nodes)
    for level in range(height):
        span = leaves >> level  # leaves under one node of this level
        for offset in range(2**level):
            node = 2**level - 1 + offset
            first = offset * span
            matrix[first : first + span // 2, node] = 1.0
            matrix[first + span // 2 : first + span, node] = -1.0
    return matrix


def ancestor_table(height: int) -> torch.Tensor:
    """(leaves + 1, all nodes) bool: node on the leaf's root-to-leaf path (leaf included).

    Nodes are all 2^(h+1) - 1 of them, breadth-first, leaves last; the extra last row (index -1)
    belongs to padding tokens and is all False: padding is routed nowhere.
    """
    leaves = 2**height
    table = torch.zeros(leaves + 1, 2 * leaves - 1, dtype=torch.bool)
    for leaf in range(leaves):
        node = leaves - 1 + leaf
        while True:
            table[leaf, node] = True
            if node == 0:
                break
            node = (node - 1) // 2
    return table


def path_node_table(height: int) -> torch.Tensor:
    """(leaves + 1, h + 1) long: breadth-first ids of the nodes on each leaf's path, root first.

    The extra last row (index -1) belongs to padding tokens; it repeats leaf 0's path, and the
    cores mask it out.
    """
    leaves = 2**height
    table = torch.zeros(leaves + 1, height + 1, dtype=torch.long)
    for leaf in range(leaves):
        node = leaves - 1 + leaf
        for depth in range(height, -1, -1):
            table[leaf, depth] = node
            node = (node - 1) // 2
    table[leaves] = table[0]
    return table


@dataclass
class Routing:
    """Where each token went: `leaf` (B, H, m) int64, -1 for padding; `gate` (B, H, m), 1.0 forward."""

    leaf: torch.Tensor
    gate: torch.Tensor


def _head_tokens(x: torch.Tensor) -> torch.Tensor:
    """x (B, H, m, d) as (H, B*m, d): each head's tokens of the whole batch in one matrix (a view
    when x is a head's slice of the model's (B, m, 3, H, d) projection, as q and k are)."""
    batch, heads, m, dim = x.shape
    return x.transpose(0, 1).reshape(heads, batch * m, dim)


def _node_scores(tokens: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
    """z = x W^T + b laid out nodes first: (H, N, B*m) for tokens (H, B*m, d) (`_head_tokens`),
    W (H, N, d), b (H, N): one product per head for the whole batch (the tree is the batch's).

    Nodes first because every later reduction, softmax and gather runs over the nodes or leaves of
    one token: along a middle dimension they vectorise across the tokens, while along the last
    (31 or 32 entries at h=5) they ran several times slower on CPU.
    """
    return torch.baddbmm(bias.unsqueeze(-1), weight, tokens.transpose(1, 2))


def _per_example(leaf: torch.Tensor, batch: int) -> torch.Tensor:
    """Leaves (H, 1, B*m) of the head-major layout as (B, H, m)."""
    heads = leaf.shape[0]
    return leaf.view(heads, batch, -1).transpose(0, 1)


def _node_scale(z: torch.Tensor) -> torch.Tensor:
    """DGT's scale mean|z| over the nodes (H, 1, B*m) of node scores z (H, N, B*m); detached by construction."""
    return z.abs().mean(dim=1, keepdim=True)


def _hard_leaves(z: torch.Tensor, paths: torch.Tensor, and_bias: Optional[torch.Tensor],
                 scale: Optional[torch.Tensor] = None) -> tuple[torch.Tensor, torch.Tensor]:
    """DGT's hard forward on node scores z (H, N, B*m): leaves (H, 1, B*m), and what the backward
    would need: the nodes walked (H, h, B*m) without the AND bias, the leaf scores with it. The
    AND bias's scores use `scale` (`_node_scale(z)`; computed here unless the caller has it).

    With s = sign(z) (z >= 0 -> +1), integer leaf scores t = P s (P the fixed path matrix) and leaf
    scores mean|z| * t (+ the AND bias (H, L)), mean|z| detached, the leaf is their argmax. Without
    the AND bias that is the traversed leaf (t = h there, <= h - 2 elsewhere: no ties), so we walk
    the tree instead of scoring every leaf (and the backward never forms the leaf softmax:
    `_factorised_node_grad`).
    """
    if and_bias is None:
        return _traverse(z)
    scale = _node_scale(z) if scale is None else scale
    scores = torch.matmul(paths, _signs(z)).mul_(scale).add_(and_bias.unsqueeze(-1))  # (H, L, B*m)
    return scores.argmax(dim=1, keepdim=True), scores


def _leaf_score_grad(probabilities: torch.Tensor, leaf: torch.Tensor, grad_gate: torch.Tensor) -> torch.Tensor:
    """d loss / d leaf scores (H, L, B*m) through gate = onehot[leaf] with the identity STE.

    The gate's gradient goes to p[leaf] (identity from the one-hot into the softmax), and through
    the softmax: d p_leaf / d scores = p_leaf (e_leaf - p). `leaf` and `grad_gate` are (H, 1, B*m).
    """
    step = probabilities.gather(1, leaf) * grad_gate  # (H, 1, B*m): p_leaf * d loss / d gate
    return (probabilities * -step).scatter_add_(1, leaf, step)


def _signs(z: torch.Tensor) -> torch.Tensor:
    """+1 where z >= 0, else -1 (sign(2 sign(z) + 1): float passes ran faster here than a compare)."""
    return torch.sign(z).mul_(2.0).add_(1.0).sign_()


def _factorised_node_grad(z: torch.Tensor, scale: torch.Tensor, visited: torch.Tensor, grad_gate: torch.Tensor) -> torch.Tensor:
    """P^T d loss / d leaf scores (H, N, B*m), without the AND bias, in closed form.

    Leaf l's integer score is h - 2 d_l, d_l the nodes on its path whose sign it goes against, and
    every pattern of disagreements belongs to exactly one leaf, so the softmax over leaves factorises
    into independent levels: p_l = q^(h - d_l) (1 - q)^(d_l) with q = sigmoid(2 mean|z|), and
    p_leaf = q^h. With beta = 2q - 1 = tanh(mean|z|) and reach_j the probability of passing node j,
    sum_l P[l, j] p_l = s_j beta reach_j, so node j's gradient is
    p_leaf * d loss / d gate * s_j * ([j on the walked path] - beta reach_j).
    reach is computed level by level (children: reach_j (1 +- s_j beta) / 2): no (L, m) softmax,
    no path-matrix products.
    """
    height = visited.shape[1]
    beta = torch.tanh(scale)  # (H, 1, B*m)
    signs = _signs(z)
    reach = torch.empty_like(z)  # probability of passing each node, level by level
    tilt = torch.empty_like(z)  # beta s_j reach_j: what node j's gradient subtracts
    reach[:, :1] = 1.0
    for level in range(height):
        first, last = 2**level - 1, 2 ** (level + 1) - 1  # this level's nodes, breadth-first
        parents = reach[:, first:last]
        torch.mul(signs[:, first:last], parents, out=tilt[:, first:last])
        tilt[:, first:last].mul_(beta)
        if level + 1 < height:
            children = reach[:, last : 2 * last + 1].unflatten(1, (last - first, 2))
            torch.add(parents, tilt[:, first:last], out=children[:, :, 0]).mul_(0.5)
            torch.sub(parents, tilt[:, first:last], out=children[:, :, 1]).mul_(0.5)
    return tilt.neg_().scatter_add_(1, visited, signs.gather(1, visited)).mul_(_leaf_probability(beta, height) * grad_gate)


def _leaf_probability(beta: torch.Tensor, height: int) -> torch.Tensor:
    """p_leaf = q^h with q = (1 + beta) / 2, beta = tanh(mean|z|) (pow ran slower here than log and exp)."""
    return beta.add(1.0).mul_(0.5).log_().mul_(height).exp_()


def _ste_factor(scale: torch.Tensor, scaled: bool) -> torch.Tensor | float:
    """DGT's STE slope inside its window: 2, or 2 mean|z| for the `scaled` variant."""
    return 2.0 * scale if scaled else 2.0


def _ste_window(grad_signs: torch.Tensor, z: torch.Tensor, scale: torch.Tensor, scaled: bool) -> torch.Tensor:
    """d loss / d z from d loss / d signs (H, N, B*m). DGT's STE gives d(mean|z| s)/dz = 2 inside the
    window |z| <= 1 and 0 outside (2 mean|z| when `scaled`): hardtanh's backward in one pass (a
    compare and a mask took several), its open interval widened to the next float past 1 so that
    |z| = 1 stays inside, as in DGT."""
    edge = 1.0 + torch.finfo(z.dtype).eps
    return torch.ops.aten.hardtanh_backward(grad_signs.mul_(_ste_factor(scale, scaled)), z, -edge, edge)


def _kernels_run(z: torch.Tensor) -> bool:
    """Whether the C++ routing loops (`kernels`) take node scores z: on the CPU, where they built."""
    return kernels.run_on(z.device.type)


def _walk_and_scale(z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Leaves (H, 1, B*m), walked nodes (H, h, B*m) and DGT's scale mean|z| (H, 1, B*m) of node
    scores z (H, N, B*m): one C++ pass over z where the kernels run, else `_traverse` and `_node_scale`."""
    if _kernels_run(z):
        return torch.ops.treeformer_routing.dgt_walk(z)
    leaf, walked = _traverse(z)
    return leaf, walked, _node_scale(z)


class _DGTRouting(torch.autograd.Function):
    """Hard DGT routing forward (`_hard_leaves`) with DGT's straight-through backward.

    The gate output is 1 (the one-hot at the leaf). Backward: the identity STE sends d gate to
    p[leaf], the softmax to the leaf scores (and the AND bias), P back to the signs (in closed form
    without the AND bias: `_factorised_node_grad`), and the hard-tanh STE through where |z| <= 1
    with factor 2 (DGT's `2a - fac`; times mean|z| too when `scaled`). Fused by hand to keep few
    (N x m) tensors alive.
    """

    @staticmethod
    def forward(ctx, x, weight, bias, paths, and_bias, scaled):
        batch, heads, m, _ = x.shape
        tokens = _head_tokens(x)
        z = _node_scores(tokens, weight, bias)  # (H, N, B*m)
        walked = probabilities = None
        if and_bias is None:
            leaf, walked, scale = _walk_and_scale(z)
        else:
            scale = _node_scale(z)
            leaf, scores = _hard_leaves(z, paths, and_bias, scale)
            probabilities = torch.softmax(scores, dim=1)
        ctx.save_for_backward(tokens, weight, paths, leaf, z, scale, walked, probabilities)
        ctx.scaled, ctx.has_and_bias, ctx.batch = scaled, and_bias is not None, batch
        leaf = _per_example(leaf, batch)
        ctx.mark_non_differentiable(leaf)
        return leaf, x.new_ones(batch, heads, m)

    @staticmethod
    def backward(ctx, _grad_leaf, grad_gate):
        tokens, weight, paths, leaf, z, scale, walked, probabilities = ctx.saved_tensors
        heads, _, dim = tokens.shape
        batch = ctx.batch
        grad_gate = grad_gate.transpose(0, 1).reshape(heads, 1, -1)  # (H, 1, B*m)
        grad_and_bias = None
        if ctx.has_and_bias:
            grad_scores = _leaf_score_grad(probabilities, leaf, grad_gate)  # (H, L, B*m)
            grad_and_bias = grad_scores.sum(dim=2)
            grad_signs = torch.matmul(paths.t(), grad_scores)  # scores = mean|z| * P s: d/ds is mean|z| P^T
            grad_z = _ste_window(grad_signs, z, scale, ctx.scaled)
        elif _kernels_run(z):
            beta = torch.tanh(scale)
            factor = _leaf_probability(beta, walked.shape[1]).mul_(grad_gate).mul_(_ste_factor(scale, ctx.scaled))
            grad_z = torch.ops.treeformer_routing.dgt_walk_backward(z, walked, beta, factor)
        else:
            grad_z = _ste_window(_factorised_node_grad(z, scale, walked, grad_gate), z, scale, ctx.scaled)
        grad_x = None
        if ctx.needs_input_grad[0]:
            grad_x = torch.bmm(grad_z.transpose(1, 2), weight).view(heads, batch, -1, dim).transpose(0, 1)
        grad_weight = torch.bmm(grad_z, tokens)  # (H, N, d)
        grad_bias = grad_z.sum(dim=2)  # (H, N)
        return grad_x, grad_weight, grad_bias, None, grad_and_bias, None


def needs_grad(*tensors: torch.Tensor) -> bool:
    """Whether autograd will record this forward: work that only serves the backward is skipped otherwise."""
    return torch.is_grad_enabled() and any(t.requires_grad for t in tensors)


def _walk(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, height: int) -> torch.Tensor:
    """Leaves (B, H, m) of x (B, H, m, d), evaluating only the h hyperplanes on each token's path.

    n·h·d MACs instead of the all-node product's n·(2^h - 1)·d: what a traversal needs. The
    products are an einsum so FLOP counters see them.
    """
    batch, heads, m, dim = x.shape
    nodes = weight.shape[1]
    rows = weight.reshape(heads * nodes, dim)
    offsets = bias.reshape(heads * nodes)
    head_base = torch.arange(heads, device=x.device).view(1, heads, 1) * nodes
    node = torch.zeros(batch, heads, m, dtype=torch.long, device=x.device)
    for _ in range(height):
        index = (node + head_base).view(-1)
        hyperplanes = rows.index_select(0, index).view(batch, heads, m, dim)
        z = torch.einsum("bhmd,bhmd->bhm", x, hyperplanes) + offsets.index_select(0, index).view(batch, heads, m)
        node = node * 2 + 1 + (z < 0).long()  # z >= 0 goes left
    return node - nodes


def _traverse(z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Leaf index (H, 1, B*m) by walking root to leaf over node scores (H, N, B*m), z < 0 going
    right, and the nodes it passed (H, h, B*m), root first."""
    nodes = int(z.shape[1])
    height = (nodes + 1).bit_length() - 1  # of a complete tree
    path = torch.zeros(z.shape[0], height + 1, z.shape[2], dtype=torch.long, device=z.device)  # root .. leaf
    for level in range(height):
        node = path[:, level : level + 1]  # (H, 1, B*m): small
        path[:, level + 1 : level + 2] = node * 2 + 1 + (z.gather(1, node) < 0)
    return path[:, height:] - nodes, path[:, :height]


class RoutingTree(nn.Module):
    """Per-head node hyperplanes as one batched linear layer, optionally over-parameterised.

    Parameters: `weight` (H, N, d) and `bias` (H, N) with N = 2^h - 1; with `overparam_layers`
    = L > 0 also `overparam_weights.i` (H, N, N) and `overparam_biases.i` (H, N), applied after the
    first layer with no nonlinearity, so the product collapses to one (W, b) (`collapsed`); with
    `and_bias` also `and_bias` (H, 2^h), DGT's learnable per-leaf AND bias (zero at the start).
    Buffer `node_log_weight` (2^(h+1) - 1,): a log-weight TC adds to each node's score; zero
    unless the tree was grown (see `grow_`); TF ignores it.
    """

    def __init__(
        self, num_heads: int, head_dim: int, height: int, overparam_layers: int = 0, ste: str = "dgt", and_bias: bool = False
    ):
        super().__init__()
        if ste not in STE_VARIANTS:
            raise BenchError(f"tree option 'ste' must be one of {', '.join(STE_VARIANTS)}, got {ste!r}")
        self.height = height
        self.ste = ste
        nodes = 2**height - 1
        # Hyperplanes through the data's scale: w ~ N(0, 1/d) keeps z = w.x ~ N(0, |x|^2/d), so
        # the hard-tanh window |z| <= 1 passes gradient for a good share of tokens at the start.
        self.weight = nn.Parameter(torch.randn(num_heads, nodes, head_dim) / math.sqrt(head_dim))
        self.bias = nn.Parameter(torch.zeros(num_heads, nodes))
        eye = torch.eye(nodes).expand(num_heads, nodes, nodes)
        self.overparam_weights = nn.ParameterList(
            nn.Parameter(eye + 0.01 * torch.randn(num_heads, nodes, nodes)) for _ in range(overparam_layers)
        )
        self.overparam_biases = nn.ParameterList(
            nn.Parameter(torch.zeros(num_heads, nodes)) for _ in range(overparam_layers)
        )
        self.and_bias = nn.Parameter(torch.zeros(num_heads, nodes + 1)) if and_bias else None
        self.register_buffer("node_log_weight", torch.zeros(2 * nodes + 1))
        self.register_buffer("paths", path_matrix(height), persistent=False)  # (L, N)

    @property
    def leaves(self) -> int:
        return 2**self.height

    def collapsed(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The one (W (H, N, d), b (H, N)) the layer product equals; differentiable."""
        weight, bias = self.weight, self.bias
        for outer, outer_bias in zip(self.overparam_weights, self.overparam_biases):
            weight = torch.matmul(outer, weight)  # (H, N, d)
            bias = torch.matmul(outer, bias.unsqueeze(-1)).squeeze(-1) + outer_bias  # (H, N)
        return weight, bias

    def walks(self, walk: bool) -> bool:
        """Whether a forward pass without backward evaluates only the path's hyperplanes (`_walk`).

        Asked for by `walk`; impossible with the AND bias, whose argmax needs every leaf's score.
        """
        return walk and self.and_bias is None

    def route(self, x: torch.Tensor, real: Optional[torch.Tensor], walk: bool = False) -> Routing:
        """Leaves and STE gates of x (B, H, m, d); `real` (B, m) bool or None (all real).

        Without a backward, `walk` evaluates h hyperplanes per token instead of all of them in one
        product (fewer MACs, more small operations; see `walks`).
        """
        device_type = x.device.type
        if torch.is_autocast_enabled(device_type):
            return self._route_in_fp32(x, real, walk, device_type)
        weight, bias = self.collapsed()
        if needs_grad(x, weight, bias, *([self.and_bias] if self.and_bias is not None else [])) and not torch.jit.is_tracing():
            leaf, gate = _DGTRouting.apply(x, weight, bias, self.paths, self.and_bias, self.ste == "scaled")
        else:
            # No backward wanted (evaluation, no_grad), or a FLOP tracer, which cannot see inside an
            # autograd.Function: the hard forward alone, without what only the STE needs.
            if self.walks(walk):
                leaf = _walk(x, weight, bias, self.height)
            else:
                z = _node_scores(_head_tokens(x), weight, bias)
                leaf = _per_example(_hard_leaves(z, self.paths, self.and_bias)[0], x.shape[0])
            gate = x.new_ones(x.shape[:-1])
        if real is not None:
            real = real[:, None, :]  # (B, 1, m)
            leaf = torch.where(real, leaf, torch.full_like(leaf, -1))
            gate = gate * real.to(gate.dtype)
        return Routing(leaf=leaf, gate=gate)

    def _route_in_fp32(self, x: torch.Tensor, real: Optional[torch.Tensor], walk: bool, device_type: str) -> Routing:
        """`route` under autocast (CPU or CUDA): the routing runs in fp32 with autocast off.

        In bf16 a node score near 0 changes sign with rounding, the mean|z| scale and the leaf
        softmax lose digits, and autocast would mix dtypes inside the straight-through backward.
        The gate (exactly 1 forward) returns in x's dtype, so the cores stay in the autocast dtype.
        """
        with torch.autocast(device_type, enabled=False):
            routing = self.route(x.float(), real, walk)
        return Routing(leaf=routing.leaf, gate=routing.gate.to(x.dtype))

    @torch.no_grad()
    def grow_(self) -> dict[str, torch.Tensor]:
        """Grows this tree by one level in place, keeping its Parameter objects; returns the sources.

        Each new last-level node copies its parent's hyperplane (the product is collapsed first; the
        over-parameter layers restart at identity). A copied parent sends every token that reached it
        the same way again, so each old leaf's tokens all reach one new leaf, and the other child
        stays empty: TF's leaf sets are unchanged. TC's path gains that new leaf, holding the old
        leaf's aggregate a second time; `node_log_weight` gives the old leaf and both children the
        old leaf's log-weight minus log 2, so the two copies weigh what the one did: TC's output is
        unchanged too. The AND bias of each old leaf goes to both children (leaves then stay as they
        were wherever the bias does not overrule the walk; mean|z| changes with the new level).

        Returns, for each grown parameter name, the old index (along dim 1) each new entry copies:
        `weight`, `bias` and `and_bias` (an optimizer can carry its per-entry state with it). The
        over-parameter layers change value, not just shape: their state should be reset.
        """
        heads, nodes, dim = self.weight.shape
        device = self.weight.device
        weight, bias = self.collapsed()
        parents = (torch.arange(nodes, 2 * nodes + 1, device=device) - 1) // 2  # old node of each new node's parent
        node_sources = torch.cat([torch.arange(nodes, device=device), parents])
        sources = {"weight": node_sources, "bias": node_sources}
        self.weight.data = weight[:, node_sources].clone()
        self.bias.data = bias[:, node_sources].clone()
        for outer, outer_bias in zip(self.overparam_weights, self.overparam_biases):
            outer.data = torch.eye(2 * nodes + 1, dtype=weight.dtype, device=device).expand(heads, -1, -1).clone()
            outer_bias.data = outer_bias.new_zeros(heads, 2 * nodes + 1)
        if self.and_bias is not None:
            leaf_sources = torch.arange(2 * (nodes + 1), device=device) // 2  # both children of each old leaf
            self.and_bias.data = self.and_bias[:, leaf_sources].clone()
            sources["and_bias"] = leaf_sources
        # Old nodes keep their log-weight; each old leaf (now internal) and its two new children get
        # the old leaf's log-weight minus log 2 (breadth-first: old leaves are nodes N .. 2N).
        log_weight = self.node_log_weight
        old_leaves = torch.arange(nodes, 2 * nodes + 1, device=device)
        grown_log_weight = torch.cat([log_weight, log_weight[old_leaves].repeat_interleave(2)])
        grown_log_weight[old_leaves] -= math.log(2.0)
        grown_log_weight[2 * nodes + 1 :] -= math.log(2.0)
        self.node_log_weight = grown_log_weight
        self.height += 1
        self.paths = path_matrix(self.height).to(device=device, dtype=self.paths.dtype)
        return sources

    def grown(self) -> "RoutingTree":
        """A copy of this tree grown by one level (`grow_`); this tree is left as it is."""
        tree = copy.deepcopy(self)
        tree.grow_()
        return tree
