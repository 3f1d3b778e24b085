"""A balanced routing tree for timing: each node's hyperplane moved through the median of the
tokens that reach it, so every leaf receives the same number of them.

A random tree sends unequal shares of the tokens to its leaves, and TF's executed cost grows with
the fullest leaves; timing a balanced tree beside it shows what the balanced-tree MAC formula
would buy. The hyperplane directions stay as drawn; only the biases move.
"""

from __future__ import annotations

import torch

from bench_common import BenchError


@torch.no_grad()
def balance_through_medians(tree: torch.nn.Module, tokens: torch.Tensor) -> None:
    """Sets `tree.bias` (H, N) so the tokens (B, H, m, d) split in halves at every node.

    Top down, breadth first: a node's bias is minus the midpoint between the two middle values
    of w . x over the tokens routed to it, so z = w . x + b >= 0 (left) holds for the upper half.
    With m * B divisible by 2^h and distinct projections, every leaf gets exactly m * B / 2^h.
    """
    if len(tree.overparam_weights):
        raise BenchError("balancing a routing tree needs overparam_layers = 0")
    batch, heads, m, dim = tokens.shape
    x = tokens.transpose(0, 1).reshape(heads, batch * m, dim).to(tree.weight.dtype)
    projections = torch.matmul(x, tree.weight.transpose(1, 2))  # (H, B*m, N): w_j . x for every node j
    node = torch.zeros(heads, batch * m, dtype=torch.long, device=x.device)
    for level in range(tree.height):
        for j in range(2**level - 1, 2 ** (level + 1) - 1):
            for head in range(heads):
                values = projections[head, node[head] == j, j].sort().values
                if len(values) == 0:
                    continue
                half = len(values) // 2
                threshold = (values[half - 1] + values[half]) / 2 if len(values) > 1 else values[0]
                tree.bias[head, j] = -threshold
        z = projections.gather(-1, node.unsqueeze(-1)).squeeze(-1) + tree.bias.gather(1, node)
        node = torch.where(z >= 0, 2 * node + 1, 2 * node + 2)
