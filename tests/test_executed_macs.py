"""Executed MACs over a test split: per-example counts checked against fvcore traces of single
examples (an independent count), and the mean / min / max / algorithmic statistics by hand."""

from dataclasses import dataclass

import numpy as np
import pytest
import torch

from attention_support import with_kernels
from harness.measure.flops import analyze, count_macs, count_split_macs, per_example_core_macs
from harness.training.model import EncoderClassifier, ModelConfig
from methods import create_attention

CPU = torch.device("cpu")


@dataclass
class Split:
    inputs: np.ndarray
    targets: np.ndarray


def model_and_split(attention: str, **options) -> tuple[EncoderClassifier, Split]:
    """A tiny padded-task model and four examples with 0, 5, 10, 15 trailing pads: the learned
    (here random) tree routes each differently, so a tree's executed MACs differ by example."""
    torch.manual_seed(0)
    config = ModelConfig(vocab_size=20, num_classes=3, max_seq_len=32, emb_dim=16, qkv_dim=16, mlp_dim=16,
                         num_layers=2, num_heads=2, pooling="mean", attention=attention,
                         attention_options=options, pad_id=0)
    inputs = np.random.default_rng(0).integers(1, 20, size=(4, 32))
    for i in range(4):
        inputs[i, 32 - 5 * i :] = 0
    return EncoderClassifier(config), Split(inputs, np.zeros(4, dtype=np.int64))


def fvcore_core_macs(model: EncoderClassifier, split: Split) -> list[int]:
    """The independent count: one fvcore trace per example, summed over the attention cores."""
    names = {module: name for name, module in model.named_modules()}
    counts = []
    for i in range(len(split.inputs)):
        with torch.no_grad():
            by_module = analyze(model.eval(), torch.from_numpy(split.inputs[i : i + 1])).by_module()
        counts.append(sum(by_module[names[core]] for core in model.attention_cores()))
    return counts


@pytest.fixture(scope="module")
def traced_tf():
    """The exact TF model, its split and the fvcore count of each example (tracing TF is slow)."""
    model, split = model_and_split("treeformer-tf", height=3)
    return model, split, fvcore_core_macs(model, split)


@pytest.mark.parametrize("attention, options", [
    pytest.param("treeformer-tf", {"height": 2, "bucket_capacity": 5}, id="tf-bucketed"),
    pytest.param("treeformer-tc", {"height": 3}, id="tc"),
])
def test_core_reported_counts_equal_fvcore_on_each_example(attention, options):
    model, split = model_and_split(attention, **options)
    executed, _ = per_example_core_macs(model, split, CPU)
    assert executed.tolist() == fvcore_core_macs(model, split)


def test_split_statistics_are_mean_min_max_of_the_examples(traced_tf):
    model, split, traced = traced_tf
    executed, _ = per_example_core_macs(model, split, CPU)
    assert executed.tolist() == traced  # the exact TF core's own count, example by example
    assert len(set(traced)) == len(traced), "the examples must cost differently for this test to mean anything"
    flops = count_split_macs(model, split, CPU)
    # Counting the first example only (the old record) gives traced[0], not the mean: caught here.
    assert flops["attention_core_macs"] == pytest.approx(np.mean(traced), rel=1e-12)
    assert (flops["attention_core_macs_min"], flops["attention_core_macs_max"]) == (min(traced), max(traced))
    first = count_macs(model, torch.from_numpy(split.inputs[:1]))
    shift = np.mean(traced) - traced[0]  # projections do not depend on the data
    assert flops["attention_layer_macs"] == pytest.approx(first["attention_layer_macs"] + shift, rel=1e-12)
    assert flops["total_macs"] == pytest.approx(first["total_macs"] + shift, rel=1e-12)
    core = model.attention_cores()[0]
    assert flops["attention_balanced_macs"] == 2 * core.algorithmic_macs(32)  # two layers, the formula
    assert flops["attention_algorithmic_macs"] != flops["attention_balanced_macs"]


def test_data_independent_methods_have_min_equal_max_and_no_balanced_count():
    model, split = model_and_split("full")
    flops = count_split_macs(model, split, CPU)
    traced = fvcore_core_macs(model, split)
    assert flops["attention_core_macs"] == flops["attention_core_macs_min"] == flops["attention_core_macs_max"] == traced[0]
    assert flops["attention_algorithmic_macs"] == traced[0]
    assert flops["attention_balanced_macs"] is None


@pytest.mark.parametrize("attention, options", [
    pytest.param("nystromformer", {"landmarks": 8}, id="nystromformer"),
    pytest.param("reformer", {"bucket_size": 4}, id="reformer"),
    pytest.param("routing", {}, id="routing"),
])
def test_content_routed_methods_execute_the_same_macs_on_every_example(attention, options):
    """LSH buckets and k-means clusters vary with the data, but these cores pad every bucket (chunk)
    and cluster to one size, so what executes does not: fvcore's trace of each example agrees, and
    the split's count is that of any example."""
    model, split = model_and_split(attention, **options)
    traced = fvcore_core_macs(model, split)
    assert len(set(traced)) == 1, traced
    flops = count_split_macs(model, split, CPU)
    assert flops["attention_core_macs"] == flops["attention_core_macs_max"] == traced[0]
    assert traced[0] == 2 * model.attention_cores()[0].macs(32)  # two layers, the formula


def test_tf_algorithmic_count_on_a_tree_that_sends_every_token_to_one_leaf():
    """Hand count: every node's z = b = 1 >= 0 goes left, so all n tokens share leaf 0.

    Routing: h hyperplanes of d MACs per token, for q and k, per head: 2 * H * n * h * d.
    Attention within the leaf: n queries x n keys x (2d + 1) per head (scores, weights, softmax).
    The balanced formula would give n/2^h per leaf instead (2^h times less attention).
    """
    heads, dim, n, height = 2, 8, 16, 2
    core = create_attention("treeformer-tf", num_heads=heads, head_dim=dim, max_seq_len=n, height=height).eval()
    with torch.no_grad():
        core.tree.weight.zero_()
        core.tree.bias.fill_(1.0)
        core(*torch.randn(3, 1, heads, n, dim).unbind(0))
    executed, algorithmic = (float(count.sum()) for count in core.last_forward_macs())
    assert algorithmic == 2 * heads * n * height * dim + heads * n * n * (2 * dim + 1)  # 1024 + 8704
    assert algorithmic > core.algorithmic_macs(n)
    assert executed > 0


@pytest.mark.parametrize("attention, options", [
    pytest.param("treeformer-tf", {"height": 2}, id="tf"),
    pytest.param("treeformer-tf", {"height": 2, "bucket_capacity": 12}, id="tf-bucketed"),
    pytest.param("treeformer-tc", {"height": 3}, id="tc"),
    pytest.param("treeformer-tc", {"height": 3, "implementation": "path", "overparam_layers": 1}, id="tc-path"),
    with_kernels("treeformer-tc", {"height": 3, "implementation": "fused-path"}, id="tc-fused-path"),
])
def test_a_batch_reports_what_each_example_costs_alone(attention, options):
    """Counting the split in one batch gives each example what it executes and needs in a batch of
    its own (where the core's count is what ran: fvcore agrees above), and the needed counts add up
    to the batch's own total (the diagnostics' count, computed for the batch as a whole)."""
    model, split = model_and_split(attention, **options)
    alone = per_example_core_macs(model, split, CPU, batch_size=1)
    together = per_example_core_macs(model, split, CPU, batch_size=4)
    np.testing.assert_array_equal(together[0], alone[0])
    np.testing.assert_array_equal(together[1], alone[1])
    assert len(set(alone[1].tolist())) > 1, "the examples must need different counts for this test to mean anything"
    if attention == "treeformer-tf":
        assert len(set(alone[0].tolist())) > 1, "the examples must execute different counts"
    core = model.attention_cores()[0]
    core.reset_diagnostics()
    with torch.no_grad():
        model.eval()(torch.from_numpy(split.inputs))
    _, needed = core.last_forward_macs()
    assert float(needed.sum()) == pytest.approx(core.diagnostics()["attention_algorithmic_macs_spent"] * 4, rel=1e-12)
