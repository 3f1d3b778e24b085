"""Treeformer routing, TF- and TC-Attention against explicit traversals and dense references.

Exact methods are compared with their references in float64 (tolerance 1e-10): float32 noise
depends on the CPU's kernels (with every key in one leaf, sum aggregation cancels to ~1e-5 noise).
"""

import math
import warnings

import pytest
import torch

from bench_common import BenchError
from methods import create_attention
from methods.treeformer import kernels
from methods.treeformer import tree as tree_module
from tests.attention_support import NEEDS_KERNELS, with_kernels
from tests.treeformer_reference import dgt_route, tc_dense, tf_allowed, tf_dense, traverse

HEADS, DIM = 2, 8
EXACT = dict(atol=1e-10, rtol=1e-10)  # float64 comparisons of exact methods


def build(name, n=32, seed=0, **options):
    """A core in float64 (exact comparisons), train mode."""
    torch.manual_seed(seed)
    return create_attention(name, num_heads=HEADS, head_dim=DIM, max_seq_len=n, **options).double().train()


def inputs(n=32, batch=2, seed=1, padded=True):
    generator = torch.Generator().manual_seed(seed)
    q, k, v = (
        torch.randn(batch, HEADS, n, DIM, generator=generator, dtype=torch.float64).requires_grad_() for _ in range(3)
    )
    mask = None
    if padded:
        mask = torch.ones(batch, n, dtype=torch.bool)
        mask[-1, n - n // 3 :] = False
    return q, k, v, mask


def one_leaf_takes_all(core):
    """Zero hyperplanes with bias +1: every z = 1 >= 0, so every token goes left to leaf 0."""
    with torch.no_grad():
        core.tree.weight.zero_()
        core.tree.bias.fill_(1.0)


def grads(core, tensors, out, seed=5):
    """Gradients of a random projection of `out` with respect to `tensors` and every tree parameter."""
    weights = torch.randn(out.shape, generator=torch.Generator().manual_seed(seed), dtype=out.dtype)
    params = list(core.tree.parameters())
    return torch.autograd.grad((out * weights).sum(), list(tensors) + params, allow_unused=True)


def reference_for(core):
    return tf_dense if core.registry_name == "treeformer-tf" else tc_dense


VARIANTS = [
    ("treeformer-tf", {}),
    ("treeformer-tf", {"empty_leaf": "zero"}),
    ("treeformer-tf", {"bucket_capacity": 3}),
    ("treeformer-tf", {"bucket_capacity": 5, "empty_leaf": "zero"}),
    ("treeformer-tf", {"ste": "scaled"}),
    ("treeformer-tf", {"and_bias": True, "overparam_layers": 1}),
    ("treeformer-tc", {"implementation": "all-nodes"}),
    ("treeformer-tc", {"implementation": "path"}),
    ("treeformer-tc", {"aggregate": "sum", "implementation": "all-nodes"}),
    ("treeformer-tc", {"aggregate": "sum", "implementation": "path"}),
    with_kernels("treeformer-tc", {"implementation": "fused-path"}),
    with_kernels("treeformer-tc", {"aggregate": "sum", "implementation": "fused-path"}),
    ("treeformer-tc", {"ste": "scaled"}),
    ("treeformer-tc", {"and_bias": True, "overparam_layers": 1, "implementation": "all-nodes"}),
    ("treeformer-tc", {"and_bias": True, "overparam_layers": 1, "implementation": "path"}),
    with_kernels("treeformer-tc", {"and_bias": True, "overparam_layers": 1, "implementation": "fused-path"}),
]
SCENARIOS = ["random_padded", "empty_leaves", "one_leaf_takes_all", "unpadded"]


def scenario_case(name, options, scenario):
    """A float64 core and inputs for one scenario; an AND bias gets random values that overrule some walks."""
    n = 16 if scenario == "empty_leaves" else 24
    height = 4 if scenario == "empty_leaves" else 2  # 16 leaves for 16 tokens leaves many empty
    core = build(name, n=n, height=height, **options)
    if scenario == "one_leaf_takes_all":
        one_leaf_takes_all(core)
    elif core.tree.and_bias is not None:
        with torch.no_grad():
            core.tree.and_bias.copy_(torch.randn(core.tree.and_bias.shape, generator=torch.Generator().manual_seed(3)))
    return core, inputs(n=n, padded=scenario != "unpadded")


def use_routing(monkeypatch, routing: str) -> None:
    """Route with the C++ loops ("kernels") or the eager code ("eager", what other devices run)."""
    if routing == "kernels" and not kernels.available():
        pytest.skip("the C++ kernels did not build here")
    if routing == "eager":
        monkeypatch.setattr(tree_module, "_kernels_run", lambda z: False)


@pytest.mark.parametrize("routing", ["kernels", "eager"])
@pytest.mark.parametrize("name,options", VARIANTS, ids=str)
@pytest.mark.parametrize("scenario", SCENARIOS)
def test_efficient_equals_dense_reference_forward_and_backward(monkeypatch, name, options, scenario, routing):
    """Leaves, outputs and gradients (q, k, v, every tree parameter) against the independent
    plain-autograd DGT and the dense attention references, in float64, with the routing's C++
    loops and with its eager code."""
    use_routing(monkeypatch, routing)
    core, (q, k, v, mask) = scenario_case(name, options, scenario)
    ste = options.get("ste", "dgt")
    out = core(q, k, v, key_padding_mask=mask)
    expected = reference_for(core)(core, q, k, v, key_padding_mask=mask, ste=ste)
    for x in (q, k):
        assert torch.equal(core.tree.route(x, mask).leaf, dgt_route(core.tree, x, mask)[0])
    torch.testing.assert_close(out, expected, **EXACT)
    for got, want in zip(grads(core, (q, k, v), out), grads(core, (q, k, v), expected)):
        torch.testing.assert_close(got, want, **EXACT)
    if scenario == "empty_leaves":
        queries, keys = core.route_queries_and_keys(q, k, mask)
        assert (torch.bincount(keys.leaf[0, 0], minlength=16) == 0).any(), "scenario must have empty leaves"
    if scenario == "random_padded" and core.tree.and_bias is not None:
        walked = traverse(core.tree, q.detach(), mask)
        assert not torch.equal(core.tree.route(q, mask).leaf, walked), "the AND bias must overrule some walks"


def _flip_routing_gradient(monkeypatch, core):
    backward = tree_module._DGTRouting.backward
    flipped = lambda ctx, *grads: tuple(None if g is None else -g for g in backward(ctx, *grads))  # noqa: E731
    monkeypatch.setattr(tree_module._DGTRouting, "backward", staticmethod(flipped))


def _drop_p_leaf(monkeypatch, core):
    """Without the AND bias: the closed form's p_leaf = q^h factor left out (eager code)."""
    use_routing(monkeypatch, "eager")
    closed_form = tree_module._factorised_node_grad

    def without_p_leaf(z, scale, visited, grad_gate):
        p_leaf = ((1.0 + torch.tanh(scale)) / 2.0) ** visited.shape[1]
        return closed_form(z, scale, visited, grad_gate) / p_leaf

    monkeypatch.setattr(tree_module, "_factorised_node_grad", without_p_leaf)


def _walked_path_only(monkeypatch, core):
    """Without the AND bias: the gradient of the one-hot alone, as if the softmax gave p = e_leaf
    (p_leaf * d gate * s_j on the walked nodes, nothing spread over the others; eager code)."""
    use_routing(monkeypatch, "eager")

    def path_only(z, scale, visited, grad_gate):
        signs = torch.where(z >= 0, 1.0, -1.0).to(z.dtype)
        p_leaf = ((1.0 + torch.tanh(scale)) / 2.0) ** visited.shape[1]
        return torch.zeros_like(z).scatter_(1, visited, signs.gather(1, visited) * p_leaf * grad_gate)

    monkeypatch.setattr(tree_module, "_factorised_node_grad", path_only)


def _drop_p_leaf_with_and_bias(monkeypatch, core):
    """With the AND bias (the leaf softmax): d gate taken as d p_leaf / p_leaf."""

    def without_p_leaf(probabilities, leaf, grad_gate):
        step = grad_gate.expand_as(probabilities.gather(1, leaf))
        return (probabilities * -step).scatter_add_(1, leaf, step)

    monkeypatch.setattr(tree_module, "_leaf_score_grad", without_p_leaf)


def _cut_gradient_into_q_and_k(monkeypatch, core):
    backward = tree_module._DGTRouting.backward
    cut = lambda ctx, *grads: (None,) + tuple(backward(ctx, *grads))[1:]  # noqa: E731
    monkeypatch.setattr(tree_module._DGTRouting, "backward", staticmethod(cut))


def _scaled_ste(monkeypatch, core):
    monkeypatch.setattr(core.tree, "ste", "scaled")


# mutation: (the core's options, the change)
MUTATIONS = {
    "sign_flip_of_routing_gradient": ({}, _flip_routing_gradient),
    "p_leaf_dropped": ({}, _drop_p_leaf),
    "walked_path_only": ({}, _walked_path_only),
    "p_leaf_dropped_with_and_bias": ({"and_bias": True}, _drop_p_leaf_with_and_bias),
    "no_gradient_into_q_and_k": ({}, _cut_gradient_into_q_and_k),
    "scaled_instead_of_dgt_ste": ({}, _scaled_ste),
}


@pytest.mark.parametrize("mutation", MUTATIONS)
@pytest.mark.parametrize("name", ["treeformer-tf", "treeformer-tc"])
def test_reference_comparison_catches_mutated_routing_backward(monkeypatch, name, mutation):
    """Each mutation of the STE backward leaves the forward as it is and must fail the comparison
    above: the reference shares no code with the cores, so a wrong backward cannot agree with it."""
    options, mutate = MUTATIONS[mutation]
    core, (q, k, v, mask) = scenario_case(name, options, "random_padded")
    expected = reference_for(core)(core, q, k, v, key_padding_mask=mask)
    want = grads(core, (q, k, v), expected)
    mutate(monkeypatch, core)
    out = core(q, k, v, key_padding_mask=mask)
    torch.testing.assert_close(out, expected, **EXACT)
    got = grads(core, (q, k, v), out)
    mismatches = [i for i, (a, b) in enumerate(zip(got, want)) if not torch.allclose(a, b, **EXACT)]
    assert mismatches, f"mutation {mutation} went unnoticed"
    if mutation == "no_gradient_into_q_and_k":
        assert set(mismatches) == {0, 1}  # q and k only: the STE pseudo-gradient reaches them by design


def test_walk_without_backward_equals_explicit_traversal():
    """The "path" TC's evaluation routing evaluates only the path's hyperplanes; same leaves."""
    core = build("treeformer-tc", n=32, height=3, overparam_layers=1)
    q, _, _, mask = inputs(n=32)
    with torch.no_grad():
        walked = core.tree.route(q, mask, walk=True).leaf
    assert torch.equal(walked, traverse(core.tree, q.detach(), mask))


@pytest.mark.parametrize("seq_len,height", [(64, 2), (1024, 5), (4096, 10)])
def test_tc_implementations_count_what_they_execute(seq_len, height):
    options = dict(num_heads=HEADS, head_dim=DIM, max_seq_len=seq_len, height=height)
    cores = {name: create_attention("treeformer-tc", implementation=name, **options) for name in ("path", "all-nodes")}
    auto = create_attention("treeformer-tc", **options)
    ratio = cores["path"].macs(seq_len) / cores["path"].algorithmic_macs(seq_len)
    assert 1 / 1.3 <= ratio <= 1.3, ratio
    assert cores["all-nodes"].macs(seq_len) > cores["path"].macs(seq_len)
    cores["fused-path"] = cores["path"]  # the same products, fused: test_fused_path_counts_what_path_counts
    assert auto.macs(seq_len) == cores[auto.executed_implementation(seq_len)].macs(seq_len)


@NEEDS_KERNELS
def test_fused_path_counts_what_path_counts():
    options = dict(num_heads=HEADS, head_dim=DIM, max_seq_len=1024, height=6)
    fused, path = (create_attention("treeformer-tc", implementation=name, **options) for name in ("fused-path", "path"))
    assert fused.executed_implementation(1024) == "fused-path"
    assert fused.macs(1024) == path.macs(1024)


def test_auto_takes_the_nearest_measured_point_and_path_where_nothing_was_measured(monkeypatch):
    from methods.treeformer import tc_choice

    table = {"cpu": [(256, 2, ("all-nodes", "path")), (256, 8, ("fused-path", "path", "all-nodes")),
                     (4096, 2, ("path", "all-nodes")), (4096, 8, ("all-nodes", "fused-path", "path"))]}
    monkeypatch.setattr(tc_choice, "_table", lambda: table)
    assert tc_choice.choose_implementation("cpu", 300, 3, fused=True) == "all-nodes"
    assert tc_choice.choose_implementation("cpu", 200, 7, fused=True) == "fused-path"
    assert tc_choice.choose_implementation("cpu", 200, 7, fused=False) == "path"  # kernels not built: the next
    assert tc_choice.choose_implementation("cpu", 8192, 9, fused=True) == "all-nodes"
    assert tc_choice.choose_implementation("cuda", 300, 3, fused=False) == "path"
    core = create_attention("treeformer-tc", num_heads=HEADS, head_dim=DIM, max_seq_len=4096, height=8)
    assert core.executed_implementation(4096) == "all-nodes"
    assert core.executed_implementation(256) == ("fused-path" if kernels.available() else "path")


def test_routing_equals_explicit_traversal_and_dgt_argmax():
    core = build("treeformer-tc", n=32, height=3, overparam_layers=1)
    q, k, v, mask = inputs(n=32)
    routing = core.tree.route(q, mask)
    torch.testing.assert_close(routing.leaf, traverse(core.tree, q.detach(), mask), atol=0, rtol=0)
    # DGT's definition: argmax over leaf scores = (scaled sign) @ path matrix^T.
    weight, bias = core.tree.collapsed()
    z = torch.matmul(q, weight.transpose(-1, -2)) + bias[:, None, :]
    scores = torch.matmul(torch.where(z >= 0, 1.0, -1.0) * z.abs().mean(-1, keepdim=True), core.tree.paths.t())
    real = mask[:, None, :].expand_as(routing.leaf)
    assert torch.equal(scores.argmax(-1)[real], routing.leaf[real])
    assert (routing.leaf[~real] == -1).all() and (routing.gate[~real] == 0).all()
    assert torch.equal(routing.gate[real], torch.ones_like(routing.gate[real]))


@pytest.mark.parametrize("name", ["treeformer-tf", "treeformer-tc"])
def test_straight_through_estimator_reaches_hyperplanes_only_inside_window(name):
    core = build(name, n=32, height=3)
    q, k, v, mask = inputs(n=32)
    grad_weight, grad_bias = grads(core, (q, k, v), core(q, k, v, key_padding_mask=mask))[3:]
    assert grad_weight.abs().sum() > 0 and grad_bias.abs().sum() > 0
    # Hard-tanh STE: every |z| > 1 blocks the gradient at the sign.
    with torch.no_grad():
        core.tree.weight.mul_(1e4)
        core.tree.bias.fill_(1e3)
    grad_weight, grad_bias = grads(core, (q, k, v), core(q, k, v, key_padding_mask=mask))[3:]
    assert grad_weight.abs().sum() == 0 and grad_bias.abs().sum() == 0


def test_tc_gradients_are_dense_over_real_keys_and_values():
    core = build("treeformer-tc", n=32, height=3)
    q, k, v, mask = inputs(n=32)
    grad_q, grad_k, grad_v = grads(core, (q, k, v), core(q, k, v, key_padding_mask=mask))[:3]
    real = mask[:, None, :, None].expand_as(grad_k)
    per_key = grad_k.abs().sum(-1)[mask[:, None, :].expand(-1, HEADS, -1)]
    per_value = grad_v.abs().sum(-1)[mask[:, None, :].expand(-1, HEADS, -1)]
    assert (per_key > 0).all() and (per_value > 0).all()
    assert (grad_k[~real] == 0).all() and (grad_v[~real] == 0).all()


def test_tf_key_outside_query_leaf_gets_no_gradient_from_that_query():
    core = build("treeformer-tf", n=32, height=2)
    q, k, v, _ = inputs(n=32, padded=False)
    queries, keys = core.route_queries_and_keys(q, k, None)
    out = core(q, k, v)
    allowed = tf_allowed(queries.leaf, keys.leaf, core.height, "ancestor", None)
    query = 5
    grad_k, grad_v = torch.autograd.grad(out[0, 0, query].sum() * 1.0 + out[0, 0, query, 0], (k, v))
    outside = ~allowed[0, 0, query]
    assert outside.any() and (~outside).sum() > 1, "the query's leaf must hold some but not all keys"
    assert (grad_k[0, 0, outside] == 0).all() and (grad_v[0, 0, outside] == 0).all()
    assert (grad_v[0, 0, ~outside].abs().sum(-1) > 0).all()


def test_bucketed_with_room_for_everything_equals_exact():
    exact = build("treeformer-tf", n=32, height=2)
    bucketed = build("treeformer-tf", n=32, height=2, bucket_capacity=32)
    q, k, v, mask = inputs(n=32)
    torch.testing.assert_close(bucketed(q, k, v, mask), exact(q, k, v, mask), **EXACT)


def test_overparameterised_tree_collapses_to_the_product():
    core = build("treeformer-tc", n=32, height=3, overparam_layers=2)
    tree = core.tree
    x = torch.randn(2, HEADS, 10, DIM, dtype=torch.float64)
    layered = torch.matmul(x, tree.weight.transpose(-1, -2)) + tree.bias[:, None, :]
    for weight, bias in zip(tree.overparam_weights, tree.overparam_biases):
        layered = torch.matmul(layered, weight.transpose(-1, -2)) + bias[:, None, :]
    weight, bias = tree.collapsed()
    torch.testing.assert_close(torch.matmul(x, weight.transpose(-1, -2)) + bias[:, None, :], layered, **EXACT)
    # Every factor of the product learns.
    out = core(*inputs(n=32)[:3])
    grads_ = torch.autograd.grad(out.square().sum(), list(tree.parameters()))
    assert all(g.abs().sum() > 0 for g in grads_)


GROWN = [
    ("treeformer-tf", {}),
    ("treeformer-tc", {"implementation": "all-nodes"}),
    ("treeformer-tc", {"implementation": "path"}),
    ("treeformer-tc", {"aggregate": "sum", "implementation": "path"}),
    with_kernels("treeformer-tc", {"implementation": "fused-path"}),
]


@pytest.mark.parametrize("overparam_layers", [0, 1])
@pytest.mark.parametrize("name,options", GROWN, ids=str)
def test_growing_keeps_the_output_and_nests_leaves(name, options, overparam_layers):
    """Growth by one and by two levels leaves TF's and TC's outputs as they were (float64).

    Mutation caught: without `node_log_weight` TC's output changes (the old leaf's aggregate would
    appear twice on every path); test_grown_tc_without_log_weights_changes shows it.
    """
    core = build(name, n=32, height=2, overparam_layers=overparam_layers, **options).eval()
    q, k, v, mask = inputs(n=32)
    expected = core(q, k, v, mask)
    old_leaf = core.tree.route(q, mask).leaf
    for grown_height in (3, 4):
        bigger = build(name, n=32, height=grown_height, overparam_layers=overparam_layers, **options).eval()
        bigger.tree.load_state_dict(core.tree.grown().grown().state_dict() if grown_height == 4 else core.tree.grown().state_dict())
        new_leaf = bigger.tree.route(q, mask).leaf
        real = old_leaf >= 0
        assert torch.equal(new_leaf[real] >> (grown_height - 2), old_leaf[real])  # nested under the old leaf
        torch.testing.assert_close(bigger(q, k, v, mask), expected, **EXACT)


@pytest.mark.parametrize("implementation", ["all-nodes", "path", with_kernels("fused-path")])
def test_grown_tc_without_log_weights_changes(implementation):
    core = build("treeformer-tc", n=32, height=2, implementation=implementation).eval()
    q, k, v, mask = inputs(n=32)
    bigger = build("treeformer-tc", n=32, height=3, implementation=implementation).eval()
    bigger.tree.load_state_dict(core.tree.grown().state_dict())
    bigger.tree.node_log_weight.zero_()
    assert not torch.allclose(bigger(q, k, v, mask), core(q, k, v, mask), **EXACT)


def test_grow_in_place_keeps_parameter_objects_and_says_where_each_entry_came_from():
    core = build("treeformer-tc", n=32, height=2, and_bias=True)
    tree = core.tree
    with torch.no_grad():
        tree.and_bias.copy_(torch.arange(8.0, dtype=torch.float64).view(2, 4))
    weight, bias, and_bias = tree.weight, tree.bias, tree.and_bias
    old_weight, old_and_bias = weight.detach().clone(), and_bias.detach().clone()
    sources = tree.grow_()
    assert tree.height == 3 and tree.weight is weight and tree.bias is bias and tree.and_bias is and_bias
    assert weight.shape == (HEADS, 7, DIM) and and_bias.shape == (HEADS, 8)
    assert torch.equal(sources["weight"], torch.tensor([0, 1, 2, 1, 1, 2, 2]))  # new nodes copy their parents
    assert torch.equal(weight, old_weight[:, sources["weight"]])
    assert torch.equal(and_bias, old_and_bias[:, sources["and_bias"]]) and torch.equal(sources["and_bias"], torch.arange(8) // 2)
    assert torch.equal(tree.paths, tree_module.path_matrix(3).double())


def test_and_bias_is_off_by_default_and_learns_when_on():
    assert build("treeformer-tc", n=32, height=2).tree.and_bias is None
    core = build("treeformer-tf", n=32, height=2, and_bias=True)
    q, k, v, mask = inputs(n=32)
    grad = torch.autograd.grad(core(q, k, v, mask).square().sum(), core.tree.and_bias)[0]
    assert grad.shape == (HEADS, 4) and grad.abs().sum() > 0
    # A large bias on leaf 3 wins every argmax: the bias decides the leaf, not only the walk.
    with torch.no_grad():
        core.tree.and_bias[:, 3] = 1e3
    assert (core.tree.route(q, mask).leaf[mask[:, None, :].expand(-1, HEADS, -1)] == 3).all()


@pytest.mark.parametrize(
    "name,options,message",
    [
        ("treeformer-tf", {"height": 0}, "option 'height' must be a positive integer, got 0"),
        ("treeformer-tc", {"height": -2}, "option 'height' must be a positive integer, got -2"),
        ("treeformer-tc", {"height": 6}, "option 'height'=6 gives 2^6=64 leaves, more than max_seq_len=32"),
        ("treeformer-tc", {"aggregate": "max"}, "option 'aggregate': expected one of 'mean', 'sum', got 'max'"),
        ("treeformer-tc", {"implementation": "gather"},
         "option 'implementation': expected one of 'auto', 'all-nodes', 'path', 'fused-path', got 'gather'"),
        ("treeformer-tf", {"empty_leaf": "drop"}, "option 'empty_leaf': expected one of 'ancestor', 'zero', got 'drop'"),
        ("treeformer-tf", {"bucket_capacity": 0}, "option 'bucket_capacity' must be a positive integer or null, got 0"),
        ("treeformer-tf", {"bucket_capacity": 2.5}, "option 'bucket_capacity': expected an integer, got 2.5"),
        ("treeformer-tf", {"overparam_layers": -1}, "option 'overparam_layers' must be an integer >= 0, got -1"),
        ("treeformer-tc", {"ste": "sign"}, "option 'ste': expected one of 'dgt', 'scaled', got 'sign'"),
        ("treeformer-tf", {"and_bias": 1}, "option 'and_bias': expected true or false, got 1"),
    ],
)
def test_bad_options_are_one_line_errors_at_construction(name, options, message):
    with pytest.raises(BenchError) as error:
        create_attention(name, num_heads=HEADS, head_dim=DIM, max_seq_len=32, **options)
    assert str(error.value).startswith(f"attention method '{name}' {message}")


def test_tf_diagnostics_count_what_was_spent_and_reset():
    core = build("treeformer-tf", n=32, height=2).eval()
    q, k, v, _ = inputs(n=32, padded=False)
    core(q, k, v)  # a forward with gradient, as in training: records nothing
    with torch.no_grad():
        core(q, k, v)
        core(q, k, v)
    queries, keys = core.route_queries_and_keys(q, k, None)
    allowed = tf_allowed(queries.leaf, keys.leaf, 2, "ancestor", None)
    pairs_per_example = allowed.sum().item() / q.shape[0]
    diag = core.diagnostics()
    assert diag["forward_calls"] == 2
    assert math.isclose(sum(diag["leaf_occupancy"]), 1.0, rel_tol=1e-6)
    routing = core.algorithmic_routing_macs(32)
    assert math.isclose(
        diag["attention_algorithmic_macs_spent"], routing + pairs_per_example * (2 * DIM + 1), rel_tol=1e-9
    )
    assert diag["attention_macs_spent"] >= diag["attention_algorithmic_macs_spent"]  # padded buckets
    assert math.isclose(diag["keys_reached_fraction"], allowed.sum().item() / allowed[..., 0].numel() / 32)
    assert 0 <= diag["leaf_entropy_bits"] <= 2 and diag["max_leaf_occupancy"] >= diag["mean_leaf_occupancy"] == 8
    assert core.diagnostics() == diag  # reading changes nothing
    core.reset_diagnostics()
    assert core.diagnostics()["forward_calls"] == 0


@pytest.mark.parametrize(
    "n,padded", [(4, 8), (8, 8), (12, 16), (20, 32), (32, 32), (40, 48), (64, 64), (70, 96), (100, 128)]
)
def test_tf_pads_a_leaf_to_its_size_class_and_stays_exact(n, padded):
    """A leaf of n tokens is padded to a power of two of at least 8 up to 32, above it to the next
    of 2^k and 3·2^(k-1); the padding is masked, so the result is still the dense reference's."""
    core = build("treeformer-tf", n=n, height=2)
    one_leaf_takes_all(core)
    q, k, v, _ = inputs(n=n, padded=False)
    queries, keys = core.route_queries_and_keys(q, k, None)
    plan = core.plan(queries.leaf.reshape(-1, n), keys.leaf.reshape(-1, n), q.dtype)
    assert plan.shapes == [(q.shape[0] * HEADS, padded, padded)]
    out = core(q, k, v)
    expected = tf_dense(core, q, k, v)
    torch.testing.assert_close(out, expected, **EXACT)
    for got, want in zip(grads(core, (q, k, v), out), grads(core, (q, k, v), expected)):
        torch.testing.assert_close(got, want, **EXACT)


def test_tf_macs_of_a_balanced_tree_use_the_size_classes():
    bookkeeping = 4 * 4  # as in test_macs_and_algorithmic_macs, 4 leaves
    for per_leaf, padded in ((3, 8), (12, 16), (30, 32), (40, 48), (60, 64), (90, 96)):
        tf = build("treeformer-tf", n=4 * per_leaf, height=2)
        attention = 4 * (2 * padded * padded * DIM + padded * padded)
        assert tf.macs(4 * per_leaf) == tf.routing_macs(4 * per_leaf) + HEADS * (attention + bookkeeping)


def test_tc_diagnostics_when_one_leaf_takes_all():
    core = build("treeformer-tc", n=32, height=3).eval()
    one_leaf_takes_all(core)
    q, k, v, mask = inputs(n=32)
    core(q, k, v, mask)
    # A forward with gradient, as in training, records nothing.
    assert core.diagnostics()["forward_calls"] == 0 and core.last_forward_macs() is None
    with torch.no_grad():
        core(q, k, v, mask)
    diag = core.diagnostics()
    assert diag["forward_calls"] == 1
    assert diag["leaf_occupancy"][0] == 1.0 and diag["leaf_entropy_bits"] == 0.0
    assert diag["keys_reached_fraction"] == 1.0  # through the root, every real key
    assert diag["leaf_imbalance"] == 8.0


def test_macs_and_algorithmic_macs():
    tc = build("treeformer-tc", n=4096, height=6, implementation="all-nodes")
    tf = build("treeformer-tf", n=4096, height=5)
    assert tc.algorithmic_macs(4096) < tc.macs(4096)
    assert tc.macs(4096) == 2 * tc.macs(2048)  # linear in n
    # Balanced TF: about 2 n^2 d / 2^h attention MACs, 30x below full attention's 2 n^2 d.
    full = HEADS * 2 * 4096 * 4096 * DIM
    assert 25 < full / tf.algorithmic_macs(4096) < 32
    bookkeeping = 4 * 32  # cumsums: leaf counts of the two sorts, slot offsets of queries and keys
    assert tf.macs(4096) == tf.routing_macs(4096) + HEADS * (32 * (2 * 128 * 128 * DIM + 128 * 128) + bookkeeping)


@pytest.mark.parametrize("name", ["treeformer-tf", "treeformer-tc"])
def test_backward_twice_on_one_graph_gives_the_same_gradients(name):
    core = build(name, n=32, height=3)
    q, k, v, mask = inputs(n=32)
    loss = core(q, k, v, key_padding_mask=mask).square().sum()
    first = torch.autograd.grad(loss, [q, k, core.tree.weight], retain_graph=True)
    second = torch.autograd.grad(loss, [q, k, core.tree.weight])
    for a, b in zip(first, second):
        torch.testing.assert_close(a, b, atol=0, rtol=0)


@pytest.mark.parametrize("name", ["treeformer-tf", "treeformer-tc"])
def test_traced_forward_equals_eager(name):
    """FLOP counters trace the core; the traced graph must compute the same thing."""
    core = build(name, n=32, height=3).eval()
    q, k, v, _ = inputs(n=32, padded=False)
    q, k, v = q.detach(), k.detach(), v.detach()
    with warnings.catch_warnings():  # data-dependent sizes: the trace is for this input only
        warnings.simplefilter("ignore")
        traced = torch.jit.trace(core, (q, k, v), check_trace=False)
    torch.testing.assert_close(traced(q, k, v), core(q, k, v), **EXACT)



class LeafSoftmaxCalls(torch.overrides.TorchFunctionMode):
    """Counts softmax calls over the leaves (dim 1 of the routing's (B*H, leaves, m) scores): the
    routing's leaf softmax, which only the STE needs. The cores' attention softmaxes run over other
    dimensions or sizes (at height 2: 4 leaves, 3 path nodes)."""

    def __init__(self, leaves: int):
        super().__init__()
        self.leaves = leaves
        self.calls = 0

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func is torch.softmax:
            dim = args[1] if len(args) > 1 else kwargs.get("dim")
            self.calls += dim == 1 and args[0].dim() == 3 and args[0].shape[1] == self.leaves
        return func(*args, **kwargs)


@pytest.mark.parametrize("and_bias", [False, True])
@pytest.mark.parametrize("name", ["treeformer-tf", "treeformer-tc"])
def test_leaf_softmax_runs_only_for_the_and_bias_backward(name, and_bias):
    """Without the AND bias the backward's leaf softmax has a closed form, so it never runs; with
    it, only when a gradient is wanted (queries and keys)."""
    core = build(name, n=32, height=2, and_bias=and_bias)
    q, k, v, mask = inputs(n=32)
    with torch.no_grad(), LeafSoftmaxCalls(core.leaves) as without_grad:
        expected = core(q, k, v, mask)
    with LeafSoftmaxCalls(core.leaves) as with_grad:
        out = core(q, k, v, mask)
    assert without_grad.calls == 0
    assert with_grad.calls == (2 if and_bias else 0)
    torch.testing.assert_close(out, expected, rtol=0, atol=0)
