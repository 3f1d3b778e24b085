"""Mixed precision: `train.precision`, and every method trains under bf16 autocast on CPU.

CPU bf16 autocast runs the same autocast machinery a CUDA run uses, so these tests check the GPU
training path (bf16 on CUDA by default) on every CI run without a GPU. Before the routing ran in
fp32, every Treeformer run crashed at its first backward ("expected m1 and m2 to have the same
dtype"): the tests that train TF, TC and a bootstrapped TF catch that regression.
"""

import math

import pytest
import torch
import torch.nn.functional as F

from attention_support import with_kernels
from bench_common import BenchError
from harness.training.bootstrap import build_bootstrap
from harness.training.loop import Splits, autocast, train
from harness.training.model import EncoderClassifier, ModelConfig
from harness.training.train_config import TrainConfig, resolve_precision
from methods import create_attention, get_attention_class, list_attentions
from conftest import TINY_TASKS, tiny_spec

SEQ_LEN = 16  # the tiny task's length


def test_precision_defaults_to_bf16_on_cuda_and_fp32_elsewhere():
    assert resolve_precision(None, "cuda") == "bf16"
    assert resolve_precision(None, "cpu") == "fp32"
    assert resolve_precision("bf16", "cpu") == "bf16" and resolve_precision("fp32", "cuda") == "fp32"
    with pytest.raises(BenchError, match="train.precision must be one of fp32, bf16"):
        resolve_precision("fp16", "cpu")


def test_autocast_follows_the_precision():
    cpu = torch.device("cpu")
    with autocast(cpu, "bf16"):
        assert torch.is_autocast_enabled("cpu")
        assert torch.matmul(torch.ones(2, 2), torch.ones(2, 2)).dtype == torch.bfloat16
    for precision in ("fp32", None):
        with autocast(cpu, precision):
            assert not torch.is_autocast_enabled("cpu")


def test_the_record_config_names_the_precision_that_ran(tmp_path, tiny_suite):
    def resolve(sets=()):
        return tiny_spec(tmp_path, "full", sets)

    assert resolve().config["train"]["precision"] == "fp32"  # null resolved for the cpu device
    bf16 = resolve(["train.precision=bf16"])
    assert bf16.config["train"]["precision"] == "bf16"
    assert bf16.config_hash != resolve().config_hash
    with pytest.raises(BenchError, match="train.precision"):
        resolve(["train.precision=fp16"])


def tiny_model(attention: str, options: dict, seed: int = 0) -> EncoderClassifier:
    task = TINY_TASKS["tiny-majority"]
    torch.manual_seed(seed)
    config = ModelConfig(vocab_size=task.vocab_size, num_classes=task.num_classes, max_seq_len=task.seq_len,
                         emb_dim=16, qkv_dim=16, mlp_dim=32, num_layers=2, num_heads=2, dropout=0.0,
                         head=task.head, pad_id=task.pad_id, attention=attention, attention_options=options)
    return EncoderClassifier(config)


def bf16_seen(model: EncoderClassifier) -> list:
    """Output dtypes of the first Q/K/V projection, recorded on every forward pass."""
    dtypes = []
    model.encoder.blocks[0].attention.qkv.register_forward_hook(lambda module, args, out: dtypes.append(out.dtype))
    return dtypes


TREE_RUNS = {
    "tf": ("treeformer-tf", {"height": 2}, None),
    "tc": ("treeformer-tc", {"height": 2}, None),
    "tc-path": ("treeformer-tc", {"height": 2, "implementation": "path"}, None),
    "tc-fused-path": ("treeformer-tc", {"height": 2, "implementation": "fused-path"}, None),
    "bootstrapped-tf": ("full", {}, {"warmup_attention": "full", "stages": [
        {"at_step": 3, "attention": "treeformer-tc", "options": {"height": 2}},
        {"at_step": 6, "attention": "treeformer-tc", "options": {"height": 3}},  # grows the tree
        {"at_step": 9, "attention": "treeformer-tf", "options": {"height": 3}},
    ]}),
}


class TreeSnapshot:
    """Copies the trees' hyperplanes at the start of step `at` (after any switch due then)."""

    def __init__(self, at: int):
        self.at, self.weights = at, None

    def on_step_start(self, step, model):
        if step == self.at:
            self.weights = [core.tree.weight.detach().clone() for core in model.attention_cores()]


@pytest.mark.parametrize("run", [with_kernels(run) if TREE_RUNS[run][1].get("implementation") == "fused-path" else run
                                 for run in sorted(TREE_RUNS)])
def test_treeformer_trains_through_the_loop_under_cpu_bf16(run):
    attention, options, bootstrap = TREE_RUNS[run]
    task = TINY_TASKS["tiny-majority"]
    model = tiny_model(attention, options)
    snapshot = TreeSnapshot(at=9 if bootstrap else 0)  # the last switch of the bootstrapped run
    callbacks = (build_bootstrap(bootstrap, model.config) if bootstrap else []) + [snapshot]
    dtypes = bf16_seen(model)
    data = task.prepare(None, {"num_examples": 64})
    config = TrainConfig(steps=12, batch_size=8, lr=3e-3, schedule="constant", warmup_steps=1, eval_every=4,
                         eval_batches=1, precision="bf16")
    qkv_before = model.encoder.blocks[0].attention.qkv.weight.detach().clone()
    result = train(model, Splits(data["train"], data["val"], data["test"]), config, head=task.head, seed=0,
                   device=torch.device("cpu"), callbacks=callbacks, progress=False)
    assert result.status == "ok", result.reason
    assert result.metrics.steps == 12
    assert all(math.isfinite(point["train_loss"]) for point in result.metrics.history)
    assert dtypes and set(dtypes) == {torch.bfloat16}  # the loop really ran under bf16 autocast
    trees = [core.tree for core in model.attention_cores()]
    assert all(torch.isfinite(p).all() for p in model.parameters())
    # Tree hyperplanes learned (the straight-through backward ran); so did the projections.
    assert all(not torch.equal(before, tree.weight) for before, tree in zip(snapshot.weights, trees))
    assert not torch.equal(qkv_before, model.encoder.blocks[0].attention.qkv.weight)
    assert all(tree.weight.dtype == torch.float32 for tree in trees)
    if bootstrap:
        assert [event["to"] for event in result.events] == ["full", "treeformer-tc", "treeformer-tc", "treeformer-tf"]


@pytest.mark.parametrize("name", [n for n in list_attentions() if not get_attention_class(n).capabilities.cuda_only])
def test_every_method_trains_a_step_under_cpu_bf16(name):
    options = {"height": 2} if name.startswith("treeformer") else {}
    model = tiny_model(name, options)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    tokens = torch.randint(1, 3, (4, SEQ_LEN), generator=torch.Generator().manual_seed(0))
    if get_attention_class(name).capabilities.key_padding_mask:
        tokens[0, -4:] = 0  # padding in one example
    labels = torch.tensor([0, 1, 0, 1])
    before = [p.detach().clone() for p in model.parameters()]
    with autocast(torch.device("cpu"), "bf16"):
        logits = model(tokens)
        loss = F.cross_entropy(logits.float(), labels)
    loss.backward()
    optimizer.step()
    assert logits.dtype == torch.bfloat16 and torch.isfinite(loss)
    assert all(torch.isfinite(p).all() for p in model.parameters())
    assert any(not torch.equal(b, p) for b, p in zip(before, model.parameters()))


@pytest.mark.parametrize("name", ["treeformer-tf", "treeformer-tc"])
def test_routing_runs_in_fp32_under_autocast(name):
    """Under autocast the leaves are those of fp32 routing of the same (bf16-rounded) inputs; the
    gate keeps the input's dtype. Mutation caught: routing in bf16 (no autocast guard) crashes or
    moves tokens whose node score is near 0."""
    core = create_attention(name, num_heads=2, head_dim=16, max_seq_len=512, height=5).train()
    x = torch.randn(2, 2, 512, 16, generator=torch.Generator().manual_seed(3)).bfloat16().requires_grad_()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        routed = core.tree.route(x, None)
    exact = core.tree.route(x.detach().float(), None)
    assert torch.equal(routed.leaf, exact.leaf)
    assert routed.gate.dtype == torch.bfloat16
    routed.gate.float().sum().backward()  # the straight-through backward runs, in fp32, into bf16 x
    assert x.grad is not None and x.grad.dtype == torch.bfloat16 and torch.isfinite(x.grad).all()


@pytest.mark.parametrize("fused", [pytest.param(False, id="eager"), with_kernels(True, id="fused")])
def test_tc_node_counts_are_exact_under_bf16(fused):
    """bf16 holds integers exactly only up to 256: TC sums its node aggregates in fp32, so a mean over
    600 equal keys stays that key. Mutation caught: index_add in bf16 (counts stop at 256)."""
    core = create_attention("treeformer-tc", num_heads=1, head_dim=8, max_seq_len=600, height=1,
                            implementation="all-nodes").eval()
    k = torch.ones(1, 1, 600, 8)
    v = torch.linspace(0, 1, 600).view(1, 1, 600, 1).expand(1, 1, 600, 8).contiguous()
    with torch.no_grad():
        keys = core.tree.route(k, None)
        sums = core.node_sums(keys, k.bfloat16(), v.bfloat16(), fused=fused)
    assert sums.dtype == torch.float32
    assert sums[0, 0, -1].item() == 600.0  # the root's count
