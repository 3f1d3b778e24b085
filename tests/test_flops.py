"""MAC counting: every method's formula against the traced count, and the model-level split."""

from typing import Optional

import pytest
import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from attention_support import CoreOnly, with_kernels
from harness.measure.flops import analyze, count_macs
from harness.training.model import EncoderClassifier, ModelConfig
from methods import AttentionMethod, create_attention, get_attention_class, list_attentions, register_attention

HEADS, HEAD_DIM = 2, 16
LENGTHS = (128, 256)


# The exact TF core's executed count depends on the leaf sizes the data produces; its `macs()` is
# the balanced-tree count, checked by the treeformer-tf tests below on inputs that fix the balance.
DATA_DEPENDENT = {"treeformer-tf": "data-dependent cost: see test_tf_* below"}


def cpu_methods(data_dependent: Optional[dict[str, str]] = None) -> list:
    data_dependent = data_dependent or {}
    params = []
    for name in list_attentions():
        if get_attention_class(name).capabilities.cuda_only:
            params.append(pytest.param(name, marks=pytest.mark.skip(reason=f"{name} needs CUDA")))
        elif name in data_dependent:
            params.append(pytest.param(name, marks=pytest.mark.skip(reason=data_dependent[name])))
        else:
            params.append(name)
    return params


def traced_inputs(seq_len: int, with_mask: bool = False):
    """Seeded random q, k, v (1, H, n, d), and the tuple to call a core with (a quarter padded)."""
    torch.manual_seed(1)
    q, k, v = torch.randn(3, 1, HEADS, seq_len, HEAD_DIM).unbind(0)
    inputs = (q, k, v)
    if with_mask:
        mask = torch.ones(1, seq_len, dtype=torch.bool)
        mask[0, seq_len * 3 // 4 :] = False
        inputs = (q, k, v, mask)
    return q, k, v, inputs


def traced_core(name: str, seq_len: int, with_mask: bool = False, **options):
    torch.manual_seed(0)
    core = create_attention(name, num_heads=HEADS, head_dim=HEAD_DIM, max_seq_len=seq_len, **options).eval()
    inputs = traced_inputs(seq_len, with_mask)[3]
    with torch.no_grad():
        return core, analyze(CoreOnly(core), inputs)


@pytest.mark.parametrize("seq_len", LENGTHS)
@pytest.mark.parametrize("name", cpu_methods(DATA_DEPENDENT))
def test_macs_formula_matches_fvcore(name, seq_len):
    core, analysis = traced_core(name, seq_len)
    assert_close(core.macs(seq_len), analysis.total("core"), f"{name}.macs({seq_len})", analysis)


@pytest.mark.parametrize("name", cpu_methods())
def test_no_unsupported_operator_inside_a_core(name):
    caps = get_attention_class(name).capabilities
    for with_mask in (False, True) if caps.key_padding_mask else (False,):
        _, analysis = traced_core(name, LENGTHS[0], with_mask=with_mask)
        assert dict(analysis.unsupported_ops("core")) == {}, f"mask={with_mask}"


def assert_close(counted: float, traced: int, what: str, analysis) -> None:
    assert traced > 0
    assert abs(counted - traced) <= 0.02 * traced, (
        f"{what} = {counted} but fvcore counts {traced} ({(counted - traced) / traced:+.2%}); "
        f"by operator: {dict(analysis.by_operator('core'))}"
    )


def tree_signs(leaf: torch.Tensor, height: int) -> torch.Tensor:
    """(n, height) +1/-1: at level l, -1 where the path to `leaf` turns right (bit l from the top)."""
    bits = (leaf.unsqueeze(1) >> torch.arange(height - 1, -1, -1)) & 1  # (n, h)
    return 1.0 - 2.0 * bits.float()


def balanced_inputs(core, seq_len: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """q, k, v (1, H, n, d) and a tree that routes exactly n / 2^h queries and keys to every leaf.

    Every node of level l tests coordinate l alone (w = e_l, b = 0); coordinate l of a token is
    +-(1 + |noise|), its sign the turn at level l towards the token's leaf. Key i goes to leaf
    i mod L, query i to leaf 7i mod L (7 is odd, so also a bijection on every L consecutive i).
    """
    height, leaves = core.height, core.leaves
    nodes = leaves - 1
    level_of_node = torch.log2(torch.arange(1, nodes + 1).float()).floor().long()  # breadth-first
    with torch.no_grad():
        core.tree.weight.zero_()
        core.tree.weight[:, torch.arange(nodes), level_of_node] = 1.0
        core.tree.bias.zero_()
    positions = torch.arange(seq_len)
    q, k, v = torch.randn(3, 1, HEADS, seq_len, HEAD_DIM).unbind(0)
    for x, leaf in ((q, (7 * positions) % leaves), (k, positions % leaves)):
        x[..., :height] = tree_signs(leaf, height) * (1.0 + x[..., :height].abs())
    return q, k, v


TC_IMPLEMENTATIONS = [
    pytest.param({"implementation": "all-nodes"}, id="all-nodes"),
    pytest.param({"implementation": "path"}, id="path"),
    pytest.param({"implementation": "path", "and_bias": True}, id="path-and-bias"),  # cannot walk: all nodes
    with_kernels({"implementation": "fused-path"}, id="fused-path"),  # traced: its eager twin, "path"
]


@pytest.mark.parametrize("seq_len", LENGTHS)
@pytest.mark.parametrize("options", TC_IMPLEMENTATIONS)
def test_tc_macs_of_each_implementation_match_fvcore(options, seq_len):
    """`macs()` counts what the chosen TC implementation executes; the diagnostics' spent count too."""
    core, analysis = traced_core("treeformer-tc", seq_len, with_mask=True, **options)
    assert_close(core.macs(seq_len), analysis.total("core"), f"treeformer-tc{options}.macs({seq_len})", analysis)
    assert dict(analysis.unsupported_ops("core")) == {}
    core.reset_diagnostics()
    with torch.no_grad():
        core(*traced_inputs(seq_len, with_mask=True)[3])
    spent = core.diagnostics()["attention_macs_spent"]
    assert_close(spent, analysis.total("core"), f"treeformer-tc{options} attention_macs_spent", analysis)


TF_VARIANTS = [pytest.param({}, id="exact"), pytest.param({"bucket_capacity": 3}, id="bucketed")]


@pytest.mark.parametrize("seq_len", LENGTHS)
@pytest.mark.parametrize("options", TF_VARIANTS)
def test_tf_macs_formula_matches_fvcore_on_a_balanced_tree(options, seq_len):
    torch.manual_seed(0)
    core = create_attention("treeformer-tf", num_heads=HEADS, head_dim=HEAD_DIM, max_seq_len=seq_len, **options)
    q, k, v = balanced_inputs(core.eval(), seq_len)
    with torch.no_grad():
        queries, keys = core.route_queries_and_keys(q, k, None)
        for routing in (queries, keys):
            per_leaf = torch.stack([torch.bincount(row, minlength=core.leaves) for row in routing.leaf[0]])
            assert (per_leaf == seq_len // core.leaves).all(), "the construction must balance the tree"
        analysis = analyze(CoreOnly(core), (q, k, v))
    assert_close(core.macs(seq_len), analysis.total("core"), f"treeformer-tf{options}.macs({seq_len})", analysis)


@pytest.mark.parametrize("seq_len", LENGTHS)
@pytest.mark.parametrize("options", TF_VARIANTS)
def test_tf_spent_macs_in_diagnostics_match_fvcore_on_random_inputs(options, seq_len):
    """The data-dependent executed count: what diagnostics report for an input is what fvcore traces."""
    core, analysis = traced_core("treeformer-tf", seq_len, with_mask=True, **options)
    _, _, _, inputs = traced_inputs(seq_len, with_mask=True)
    core.reset_diagnostics()
    with torch.no_grad():
        core(*inputs)
    spent = core.diagnostics()["attention_macs_spent"]
    traced = analysis.total("core")
    assert_close(spent, traced, f"treeformer-tf{options} attention_macs_spent at n={seq_len}", analysis)
    assert core.macs(seq_len) != traced, "random routing is unbalanced, so this input tests the data path"
    assert dict(analysis.unsupported_ops("core")) == {}


def small_config(**overrides) -> ModelConfig:
    base = dict(vocab_size=50, num_classes=3, max_seq_len=32, emb_dim=32, qkv_dim=32, mlp_dim=48,
                num_layers=2, num_heads=2, pooling="mean", attention="full")
    return ModelConfig(**{**base, **overrides})


def analytic_model_macs(c: ModelConfig, n: int, encoder_passes: int = 1) -> dict:
    """The same counts worked out by hand for the LRA encoder (fvcore's layer_norm: 5 per element)."""
    core = c.num_heads * (2 * n * n * c.head_dim + n * n)
    projections = n * c.emb_dim * 3 * c.qkv_dim + n * c.qkv_dim * c.emb_dim
    block = core + projections + 2 * n * c.emb_dim * c.mlp_dim + 2 * 5 * n * c.emb_dim
    encoder = c.num_layers * block + 5 * n * c.emb_dim
    pooled = c.emb_dim * (4 if c.head == "dual" else 1)
    return {
        "attention_core_macs": encoder_passes * c.num_layers * core,
        "attention_layer_macs": encoder_passes * c.num_layers * (core + projections),
        "total_macs": encoder_passes * encoder + pooled * c.mlp_dim + c.mlp_dim * c.num_classes,
    }


def test_count_macs_splits_core_projections_and_rest():
    config = small_config()
    model = EncoderClassifier(config).train()
    result = count_macs(model, torch.randint(1, 50, (1, config.max_seq_len)))
    expected = analytic_model_macs(config, config.max_seq_len)
    assert {k: result[k] for k in expected} == expected
    assert result["unit"] == "MACs"
    assert result["attention_algorithmic_macs"] == result["attention_core_macs"]
    assert result["unsupported_ops"] == {}
    assert model.training, "count_macs must restore the training mode"


def test_count_macs_dual_head_counts_both_documents_per_example():
    config = small_config(head="dual")
    model = EncoderClassifier(config)
    batch = torch.randint(1, 50, (2, 2, config.max_seq_len))  # two examples, divided back out
    result = count_macs(model, batch)
    expected = analytic_model_macs(config, config.max_seq_len, encoder_passes=2)
    assert {k: result[k] for k in expected} == expected
    assert result["attention_algorithmic_macs"] == expected["attention_core_macs"]


def test_count_macs_with_cls_token_uses_the_encoded_length():
    config = small_config(pooling="cls", attention="sdpa")
    result = count_macs(EncoderClassifier(config), torch.randint(1, 50, (1, config.max_seq_len)))
    n = config.max_seq_len + 1
    assert result["attention_core_macs"] == config.num_layers * config.num_heads * (2 * n * n * config.head_dim + n * n)


def test_matmul_part_agrees_with_torch_flop_counter():
    """torch's FlopCounterMode counts 2 FLOPs per multiply-add; fvcore's matmul ops must be half."""
    config = small_config()
    model = EncoderClassifier(config).eval()
    tokens = torch.randint(1, 50, (1, config.max_seq_len))
    with torch.no_grad():
        by_operator = analyze(model, tokens).by_operator()
        with FlopCounterMode(display=False) as counter:
            model(tokens)
    matmul_macs = sum(by_operator[op] for op in ("linear", "matmul", "mm", "addmm", "bmm"))
    assert matmul_macs > 0
    assert 2 * matmul_macs == counter.get_total_flops()


def test_uncovered_operator_is_reported_not_counted_as_free(restore_attention_registry):
    @register_attention("test-log-attention")
    class LogAttention(AttentionMethod):
        def forward(self, q, k, v, key_padding_mask=None):
            return torch.log1p(torch.softmax(q @ k.transpose(-1, -2), -1)) @ v

        def macs(self, seq_len):
            return self.num_heads * (2 * seq_len * seq_len * self.head_dim + seq_len * seq_len)

    model = EncoderClassifier(small_config(attention="test-log-attention"))
    result = count_macs(model, torch.randint(1, 50, (1, 32)))
    assert result["unsupported_ops"] == {"aten::log1p": 2}


class Ops(nn.Module):
    def forward(self, x, w):
        accumulated = torch.zeros(4, 3).index_put_((torch.tensor([0, 0, 2]),), x, accumulate=True)
        replaced = torch.zeros(4, 3).index_put_((torch.tensor([0, 1, 2]),), x)
        broadcast = torch.matmul(x, w)  # (3, 3) @ (5, 3, 7): broadcast over 5
        contracted = torch.einsum("...ij,...jk->...ik", x, w)
        return accumulated.sum() + replaced.sum() + broadcast.sum() + contracted.sum()


def test_handles_for_index_put_broadcast_matmul_and_ellipsis_einsum():
    by_operator = analyze(Ops(), (torch.randn(3, 3), torch.randn(5, 3, 7))).by_operator()
    assert by_operator["index_put_"] == 9  # accumulate: 3 rows x 3 values added; the copy is free
    assert by_operator["matmul"] == 5 * 3 * 3 * 7
    assert by_operator["einsum"] == 5 * 3 * 3 * 7
