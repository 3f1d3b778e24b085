"""TC's path attention with the node gather fused into its products (`path_kernels.cpp`).

Eager PyTorch must write each query's h+1 gathered node rows before it can take their dot
products, (G*n, h+1, d) floats for keys and again for values, and its backward writes them once
more; the kernels read the node rows in place. Two products, each with its backward made of the
same three loops:

    w   = softmax(alpha * <K[path], q> + bias)   ds = softmax'(w, dw)   d q = alpha * mix(K, ds)   d K = alpha * scatter(ds, q)
    out = sum_j w_j V[path_j]                    d w = dots(V, d out)                        d V = scatter(w, d out)

Two more loops sum the keys and values into their leaves (TC's node aggregates start there) and
give that sum's backward, reading k and v in place instead of writing (B*H*n, 2d+1) [k, v, 1] rows.

The loops are C++ (`kernels`: CPU only, built on first use); where they cannot be built TC runs its
eager implementations.
"""

from __future__ import annotations

import torch


class PathWeights(torch.autograd.Function):
    """(G, n, P) softmax over each query's path of alpha * <node_keys[path], q> + bias;
    node_keys (G, N, d), q (G, n, d), path and bias (G, n, P)."""

    @staticmethod
    def forward(ctx, node_keys, path, q, bias, alpha: float):
        weights = torch.ops.treeformer_path.path_dots(node_keys, path, q, bias, alpha, True)
        ctx.save_for_backward(node_keys, path, q, weights)
        ctx.alpha = alpha
        return weights

    @staticmethod
    def backward(ctx, grad_weights):
        node_keys, path, q, weights = ctx.saved_tensors
        grad_scores = torch.ops.treeformer_path.softmax_backward(weights, grad_weights)
        grad_q = grad_node_keys = None
        if ctx.needs_input_grad[2]:
            grad_q = torch.ops.treeformer_path.path_mix(node_keys, path, grad_scores).mul_(ctx.alpha)
        if ctx.needs_input_grad[0]:
            grad_node_keys = torch.ops.treeformer_path.path_scatter(grad_scores, q, path, node_keys.shape[1]).mul_(ctx.alpha)
        grad_bias = grad_scores if ctx.needs_input_grad[3] else None
        return grad_node_keys, None, grad_q, grad_bias, None


class PathMix(torch.autograd.Function):
    """(G, n, d) sums over each query's path of weights (G, n, P) times node_values[path] (G, N, d)."""

    @staticmethod
    def forward(ctx, node_values, path, weights):
        ctx.save_for_backward(node_values, path, weights)
        return torch.ops.treeformer_path.path_mix(node_values, path, weights)

    @staticmethod
    def backward(ctx, grad_out):
        node_values, path, weights = ctx.saved_tensors
        grad_values = grad_weights = None
        if ctx.needs_input_grad[2]:
            grad_weights = torch.ops.treeformer_path.path_dots(node_values, path, grad_out, None, 1.0, False)
        if ctx.needs_input_grad[0]:
            grad_values = torch.ops.treeformer_path.path_scatter(weights, grad_out, path, node_values.shape[1])
        return grad_values, None, grad_weights


class LeafSums(torch.autograd.Function):
    """(B*H, L, 2d+1) sums of g·[k, v, 1] per leaf; k, v (B, H, n, d), gate and leaf (B, H, n),
    leaf -1 for padding. In fp32 at least, as TC's eager sums.

    The gate g is exactly 1 forward, so the kernel adds the ungated rows; the backward applies the
    product rule: d k = g·d row = d row (g = 1), and d g = <d row, [k, v, 1]>.
    """

    @staticmethod
    def forward(ctx, k, v, gate, leaf, num_leaves: int):
        ctx.save_for_backward(k, v, leaf)
        return torch.ops.treeformer_path.leaf_sums(k, v, leaf, num_leaves)

    @staticmethod
    def backward(ctx, grad_sums):
        k, v, leaf = ctx.saved_tensors
        grad_k, grad_v, grad_gate = torch.ops.treeformer_path.leaf_sums_backward(grad_sums, k, v, leaf)
        return grad_k, grad_v, grad_gate, None, None
