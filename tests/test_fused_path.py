"""TC's C++ kernels (methods/treeformer/path_kernels.cpp) against plain Python loops, in float64.

The references index one query, path node and key at a time and share nothing with the kernels
or with TC's eager implementations; gradcheck checks each autograd Function's backward against
finite differences. TC as a whole, with implementation="fused-path", is compared with the dense
references in test_treeformer.py.
"""

from __future__ import annotations

import pytest
import torch

from bench_common import BenchError
from methods import create_attention
from methods.treeformer import kernels
from methods.treeformer.fused_path import LeafSums, PathMix, PathWeights

pytestmark = pytest.mark.skipif(not kernels.available(), reason="TC's C++ kernels did not build here")
OPS = torch.ops.treeformer_path if kernels.available() else None
GROUPS, N, NODES, DIM, WIDTH = 3, 7, 15, 5, 4  # a height-3 tree: 15 nodes, paths of 4


def random_case(seed: int = 0):
    generator = torch.Generator().manual_seed(seed)
    nodes = torch.randn(GROUPS, NODES, DIM, generator=generator, dtype=torch.float64)
    rows = torch.randn(GROUPS, N, DIM, generator=generator, dtype=torch.float64)
    path = torch.randint(0, NODES, (GROUPS, N, WIDTH), generator=generator)
    weights = torch.randn(GROUPS, N, WIDTH, generator=generator, dtype=torch.float64)
    return nodes, rows, path, weights


def loop_dots(nodes, path, rows, bias, alpha, softmax):
    out = torch.zeros(path.shape, dtype=nodes.dtype)
    for g in range(path.shape[0]):
        for i in range(path.shape[1]):
            scores = [alpha * float(nodes[g, int(path[g, i, j])] @ rows[g, i]) + (0.0 if bias is None else float(bias[g, i, j]))
                      for j in range(path.shape[2])]
            if softmax:
                exps = [2.718281828459045 ** (s - max(scores)) for s in scores]
                scores = [e / sum(exps) for e in exps]
            out[g, i] = torch.tensor(scores, dtype=nodes.dtype)
    return out


def loop_mix(nodes, path, weights):
    out = torch.zeros(path.shape[0], path.shape[1], nodes.shape[2], dtype=nodes.dtype)
    for g in range(path.shape[0]):
        for i in range(path.shape[1]):
            for j in range(path.shape[2]):
                out[g, i] += weights[g, i, j] * nodes[g, int(path[g, i, j])]
    return out


def loop_scatter(weights, rows, path, num_nodes):
    out = torch.zeros(path.shape[0], num_nodes, rows.shape[2], dtype=rows.dtype)
    for g in range(path.shape[0]):
        for i in range(path.shape[1]):
            for j in range(path.shape[2]):
                out[g, int(path[g, i, j])] += weights[g, i, j] * rows[g, i]
    return out


def loop_leaf_sums(k, v, leaf, num_leaves):
    batch, heads, n, dim = k.shape
    out = torch.zeros(batch * heads, num_leaves, 2 * dim + 1, dtype=torch.promote_types(k.dtype, torch.float32))
    for b in range(batch):
        for h in range(heads):
            for i in range(n):
                if leaf[b, h, i] >= 0:
                    out[b * heads + h, int(leaf[b, h, i])] += torch.cat([k[b, h, i], v[b, h, i], torch.ones(1, dtype=k.dtype)])
    return out


@pytest.mark.parametrize("with_bias", [False, True])
@pytest.mark.parametrize("softmax", [False, True])
def test_path_dots_equals_loops(with_bias, softmax):
    nodes, rows, path, weights = random_case()
    bias = weights if with_bias else None
    got = OPS.path_dots(nodes, path, rows, bias, 0.3, softmax)
    torch.testing.assert_close(got, loop_dots(nodes, path, rows, bias, 0.3, softmax), rtol=1e-12, atol=1e-12)


def test_path_mix_scatter_and_softmax_backward_equal_loops():
    nodes, rows, path, weights = random_case(1)
    torch.testing.assert_close(OPS.path_mix(nodes, path, weights), loop_mix(nodes, path, weights), rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(OPS.path_scatter(weights, rows, path, NODES), loop_scatter(weights, rows, path, NODES),
                               rtol=1e-12, atol=1e-12)
    probabilities = torch.softmax(weights, dim=-1).requires_grad_()
    grad = torch.randn_like(weights)
    logits = weights.clone().requires_grad_()
    expected, = torch.autograd.grad(torch.softmax(logits, dim=-1), logits, grad)
    torch.testing.assert_close(OPS.softmax_backward(probabilities.detach(), grad), expected, rtol=1e-12, atol=1e-12)


def test_leaf_sums_read_strided_views_and_skip_padding():
    """k and v as the projections hand them over, (B, n, H, d) memory seen as (B, H, n, d)."""
    generator = torch.Generator().manual_seed(2)
    qkv = torch.randn(2, N, 3, 2, DIM, generator=generator, dtype=torch.float64)
    _, k, v = qkv.permute(2, 0, 3, 1, 4).unbind(0)
    leaf = torch.randint(-1, 4, (2, 2, N), generator=generator)
    torch.testing.assert_close(OPS.leaf_sums(k, v, leaf, 4), loop_leaf_sums(k, v, leaf, 4), rtol=1e-12, atol=1e-12)


def test_autograd_functions_pass_gradcheck():
    nodes, rows, path, weights = random_case(3)
    keys, q = nodes.clone().requires_grad_(), rows.clone().requires_grad_()
    bias = (0.1 * weights).requires_grad_()
    assert torch.autograd.gradcheck(lambda a, b, c: PathWeights.apply(a, path, b, c, 0.7), (keys, q, bias))
    values, mix = nodes.clone().requires_grad_(), torch.softmax(weights, -1).requires_grad_()
    assert torch.autograd.gradcheck(lambda a, b: PathMix.apply(a, path, b), (values, mix))
    generator = torch.Generator().manual_seed(4)
    k, v = (torch.randn(2, 2, N, DIM, generator=generator, dtype=torch.float64, requires_grad=True) for _ in range(2))
    gate = torch.ones(2, 2, N, dtype=torch.float64, requires_grad=True)
    leaf = torch.randint(-1, 4, (2, 2, N), generator=generator)
    # The gate is 1 forward; its gradient is the product rule's (gradcheck would perturb it, so it
    # is checked against the gated sums by autograd instead).
    assert torch.autograd.gradcheck(lambda a, b: LeafSums.apply(a, b, gate.detach(), leaf, 4), (k, v))
    grad = torch.randn(4, 4, 2 * DIM + 1, dtype=torch.float64)
    got, = torch.autograd.grad(LeafSums.apply(k, v, gate, leaf, 4), gate, grad)
    rows = torch.cat([k, v, torch.ones_like(k[..., :1])], dim=-1) * gate.unsqueeze(-1)
    real = (leaf >= 0).unsqueeze(-1)
    one_hot = torch.nn.functional.one_hot(leaf.clamp(min=0), 4).to(rows.dtype) * real
    gated = torch.einsum("bhnl,bhnc->bhlc", one_hot, rows).reshape(4, 4, -1)
    want, = torch.autograd.grad(gated, gate, grad)
    torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-12)


def test_an_index_outside_the_tree_is_refused_before_any_read():
    nodes, rows, path, weights = random_case()
    path[1, 2, 0] = NODES
    with pytest.raises(RuntimeError, match=r"path_dots: a path holds a node index outside \[0, 15\)"):
        OPS.path_dots(nodes, path, rows, None, 1.0, False)
    with pytest.raises(RuntimeError, match=r"path_scatter: a path holds a node index outside"):
        OPS.path_scatter(weights, rows, path, NODES)
    k = torch.randn(1, 1, 3, DIM)
    with pytest.raises(RuntimeError, match=r"leaf_sums: a leaf index outside \[-1, 2\)"):
        OPS.leaf_sums(k, k, torch.tensor([[[0, 2, 1]]]), 2)


def test_without_the_kernels_auto_runs_eager_and_asking_for_them_is_one_clear_error(monkeypatch):
    monkeypatch.setattr(kernels, "available", lambda: False)
    options = dict(num_heads=2, head_dim=DIM, max_seq_len=64, height=3)
    assert create_attention("treeformer-tc", **options).executed_implementation(64) in ("all-nodes", "path")
    core = create_attention("treeformer-tc", implementation="fused-path", **options)
    with pytest.raises(BenchError, match="'fused-path' needs the CPU and its C\\+\\+ kernels"):
        core(*torch.randn(3, 1, 2, 64, DIM).unbind(0))
