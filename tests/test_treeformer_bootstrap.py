"""The two-level bootstrap: validation before training, stage switches that keep every weight."""

import pytest
import torch
import torch.nn.functional as F

from bench_common import BenchError
from harness.training.bootstrap import build_bootstrap, validate_bootstrap
from harness.training.model import EncoderClassifier, ModelConfig

SEQ_LEN = 32


def tiny_config(**overrides) -> ModelConfig:
    base = dict(
        vocab_size=12, num_classes=2, max_seq_len=SEQ_LEN, emb_dim=16, qkv_dim=16, mlp_dim=32,
        num_layers=2, num_heads=2, dropout=0.0, attention="full",
    )
    base.update(overrides)
    return ModelConfig(**base)


def batch(seed: int, size: int = 16):
    """Token sequences with padding (id 0); label: does token 3 occur more often than token 4?"""
    generator = torch.Generator().manual_seed(seed)
    tokens = torch.randint(1, 12, (size, SEQ_LEN), generator=generator)
    lengths = torch.randint(SEQ_LEN // 2, SEQ_LEN + 1, (size,), generator=generator)
    tokens[torch.arange(SEQ_LEN)[None, :] >= lengths[:, None]] = 0
    labels = ((tokens == 3).sum(1) > (tokens == 4).sum(1)).long()
    return tokens, labels


def eval_loss(model, tokens, labels) -> float:
    model.eval()
    with torch.no_grad():
        loss = F.cross_entropy(model(tokens), labels).item()
    model.train()
    return loss


def non_core_state(model) -> dict:
    return {k: v.clone() for k, v in model.state_dict().items() if ".core." not in k}


def core_state(model, layer: int) -> dict:
    return {k: v.clone() for k, v in model.attention_cores()[layer].state_dict().items()}


STAGES = {
    "warmup_attention": "full",
    "stages": [
        {"at_step": 4, "attention": "treeformer-tc", "options": {"height": 2}},
        {"at_step": 8, "attention": "treeformer-tc", "options": {"height": 3}},
        {"at_step": 12, "attention": "treeformer-tf", "options": {"height": 3}},
    ],
}


def test_bootstrap_runs_its_stages_keeping_weights_and_trees():
    torch.manual_seed(0)
    config = tiny_config(attention="treeformer-tf", attention_options={"height": 3})
    model = EncoderClassifier(config)
    callbacks = build_bootstrap(STAGES, config)
    probe_tokens, probe_labels = batch(seed=99)
    events, optimizer = [], None
    for step in range(16):
        before_loss = eval_loss(model, probe_tokens, probe_labels)
        before_weights = non_core_state(model)
        before_cores = [core_state(model, i) for i in range(config.num_layers)]
        for callback in callbacks:
            event = callback.on_step_start(step, model)
            if event:
                events.append(event)
                optimizer = None  # the loop re-collects parameters after a switch
                after_weights = non_core_state(model)
                assert after_weights.keys() == before_weights.keys()
                for key, value in before_weights.items():
                    assert torch.equal(after_weights[key], value), f"{key} changed at the switch"
                if step == 8:  # TC height 2 -> 3: the old nodes are the first 3 of the grown tree
                    grown = core_state(model, 0)["tree.weight"]
                    assert torch.equal(grown[:, :3], before_cores[0]["tree.weight"])
                if step == 12:  # TC -> TF at equal height: the tree is carried unchanged
                    for i in range(config.num_layers):
                        after = core_state(model, i)
                        for key in ("tree.weight", "tree.bias"):
                            assert torch.equal(after[key], before_cores[i][key])
                    after_loss = eval_loss(model, probe_tokens, probe_labels)
                    # Same weights, other core: the loss moves by what the core changes, no reset.
                    rebuilt = EncoderClassifier(tiny_config(attention="treeformer-tf", attention_options={"height": 3}))
                    rebuilt.load_state_dict(model.state_dict(), strict=True)
                    assert after_loss == pytest.approx(eval_loss(rebuilt, probe_tokens, probe_labels), abs=1e-6)
                    assert abs(after_loss - before_loss) < 0.25 * before_loss
        if optimizer is None:
            optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
        tokens, labels = batch(seed=step)
        loss = F.cross_entropy(model(tokens), labels)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    assert [(e["step"], e["from"], e["to"], e["tree"]) for e in events] == [
        (0, "treeformer-tf", "full", "none"),
        (4, "full", "treeformer-tc", "new"),
        (8, "treeformer-tc", "treeformer-tc", "grown"),
        (12, "treeformer-tc", "treeformer-tf", "carried"),
    ]
    assert all(e["layers"] == [0, 1] for e in events)
    assert [c.registry_name for c in model.attention_cores()] == ["treeformer-tf"] * 2


@pytest.mark.parametrize("name", ["treeformer-tf", "treeformer-tc"])
def test_growing_a_tree_keeps_the_loss_exactly(name):
    """TF keeps its leaf sets; TC its outputs through the grown tree's node log-weights."""
    torch.manual_seed(1)
    config = tiny_config(attention=name, attention_options={"height": 2})
    # float64 throughout (the switch builds its new core in float32, so convert again after it):
    # growth is exact, and float32 noise would depend on the CPU.
    model = EncoderClassifier(config).double()
    section = {"warmup_attention": None, "layers": [1], "stages": [{"at_step": 3, "attention": name, "options": {"height": 4}}]}
    (callback,) = build_bootstrap(section, config)
    tokens, labels = batch(seed=5)
    assert callback.on_step_start(0, model) is None
    before = eval_loss(model, tokens, labels)
    event = callback.on_step_start(3, model)
    model.double()
    assert event["tree"] == "grown" and event["layers"] == [1]
    assert model.attention_cores()[1].height == 4 and model.attention_cores()[0].height == 2
    assert eval_loss(model, tokens, labels) == pytest.approx(before, abs=1e-10, rel=1e-10)
    assert callback.on_step_start(4, model) is None


def test_resuming_mid_run_applies_the_stage_due():
    config = tiny_config()
    model = EncoderClassifier(config)
    (callback,) = build_bootstrap(STAGES, config)
    event = callback.on_step_start(9, model)
    assert (event["to"], event["options"]) == ("treeformer-tc", {"height": 3})


@pytest.mark.parametrize("section", [None, {}, {"stages": []}, {"layers": None, "stages": []}])
def test_no_bootstrap(section):
    assert validate_bootstrap(section) is None
    assert build_bootstrap(section, tiny_config()) == []


def test_null_stage_options_mean_the_defaults():
    plan = validate_bootstrap({"stages": [{"at_step": 5, "attention": "treeformer-tc", "options": None}]})
    assert plan.warmup_attention == "full" and plan.stages[0].options == validate_bootstrap(
        {"stages": [{"at_step": 5, "attention": "treeformer-tc"}]}).stages[0].options


@pytest.mark.parametrize(
    "section,message",
    [
        ({"stages": [{"at_step": 5, "attention": "treeformer-tc"}, {"at_step": 5, "attention": "treeformer-tf"}]},
         r"stages\[1\].at_step=5 must be greater"),
        ({"stages": [{"at_step": 9, "attention": "treeformer-tc"}, {"at_step": 3, "attention": "treeformer-tf"}]},
         r"stages\[1\].at_step=3"),
        ({"stages": [{"at_step": 5, "attention": "treeformer-tx"}]}, "unknown attention method 'treeformer-tx'"),
        ({"warmup_attention": "fulll", "stages": [{"at_step": 5, "attention": "treeformer-tc"}]}, "unknown attention method 'fulll'"),
        ({"stages": [{"at_step": 5, "attention": "treeformer-tc", "options": {"aggregate": "max"}}]}, "aggregate"),
        ({"stages": [{"at_step": 5, "attention": "treeformer-tc", "options": {"heigth": 3}}]}, "unknown option 'heigth'"),
        ({"stages": [{"at_step": 5, "attention": "treeformer-tc", "options": {"height": 4}},
                     {"at_step": 9, "attention": "treeformer-tf", "options": {"height": 3}}]}, "heights may only grow"),
        ({"stagez": []}, "unknown option 'stagez'"),
        ({"stages": [{"at_step": 0, "attention": "treeformer-tc"}]}, "leaves no warm-up"),
        ({"stages": [{"attention": "treeformer-tc"}]}, "missing 'at_step'"),
        ({"warmup_attention": "full", "stages": []}, "nothing to switch to"),
        ({"layers": [0, 0], "stages": [{"at_step": 5, "attention": "treeformer-tc"}]}, "duplicate"),
        ({"layers": ["0"], "stages": [{"at_step": 5, "attention": "treeformer-tc"}]},
         r"^bootstrap.layers\[0\]: expected an integer, got '0'$"),
        ({"stages": [{"at_step": True, "attention": "treeformer-tc"}]},
         r"^bootstrap.stages\[0\].at_step: expected an integer, got True$"),
        ({"stages": {"at_step": 5}}, r"^bootstrap.stages: expected a list, got "),
        ({"stages": ["treeformer-tc"]}, r"^bootstrap.stages\[0\]: expected a mapping, got 'treeformer-tc'$"),
        ({"warmup_attention": 1, "stages": [{"at_step": 5, "attention": "treeformer-tc"}]},
         r"^bootstrap.warmup_attention: expected a string, got 1$"),
    ],
)
def test_bad_sections_fail_before_training_in_one_line(section, message):
    with pytest.raises(BenchError, match=message) as error:
        validate_bootstrap(section)
    assert str(error.value).startswith("bootstrap")  # names the section


@pytest.mark.parametrize(
    "section,message",
    [
        ({"layers": [2], "stages": [{"at_step": 5, "attention": "treeformer-tc"}]}, "layer 2 out of range"),
        ({"stages": [{"at_step": 5, "attention": "treeformer-tc", "options": {"height": 6}}]}, "max_seq_len"),
    ],
)
def test_sections_that_do_not_fit_the_model_fail_at_build(section, message):
    with pytest.raises(BenchError, match=message):
        build_bootstrap(section, tiny_config())


# ---- the optimizer across switches: same Parameters, their AdamW state, no orphans ----------------

SWITCHES = {"warmup_attention": None, "stages": [
    {"at_step": 0, "attention": "treeformer-tc", "options": {"height": 2}},
    {"at_step": 3, "attention": "treeformer-tc", "options": {"height": 3}},  # grown
    {"at_step": 6, "attention": "treeformer-tf", "options": {"height": 3}},  # carried
]}


def optimizer_params(optimizer) -> list:
    return [p for group in optimizer.param_groups for p in group["params"]]


def adam_step(model, optimizer, seed):
    tokens, labels = batch(seed)
    optimizer.zero_grad()
    F.cross_entropy(model(tokens), labels).backward()
    optimizer.step()


def test_switches_keep_tree_parameters_and_their_adam_state():
    from harness.training.optimizer_state import sync_optimizer

    torch.manual_seed(0)
    config = tiny_config(attention="treeformer-tc", attention_options={"height": 2})
    model = EncoderClassifier(config)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2)
    (callback,) = build_bootstrap(SWITCHES, config)
    for step in range(9):
        trees = [core.tree for core in model.attention_cores()]
        params = [(tree.weight, tree.bias) for tree in trees]
        state = [{key: optimizer.state[p][key].clone() for key in ("exp_avg", "exp_avg_sq")}
                 for pair in params for p in pair if p in optimizer.state]
        event = callback.on_step_start(step, model)
        if event is not None:
            sync_optimizer(optimizer, model, callback.replaced)
            # The optimizer holds exactly the model's parameters, each once; its state no others.
            held = optimizer_params(optimizer)
            assert len(held) == len({id(p) for p in held})
            assert {id(p) for p in held} == {id(p) for p in model.parameters()}
            assert {id(p) for p in optimizer.state} <= {id(p) for p in model.parameters()}
            after = [(core.tree.weight, core.tree.bias) for core in model.attention_cores()]
            same = all(new is old for pair, new_pair in zip(params, after) for old, new in zip(pair, new_pair))
            assert same == (event["tree"] == "carried")  # a grown tree is a copy (see optimizer_state)
        if step == 3:  # grown h2 -> h3: each new node copies its parent, and so do its moments
            assert event["tree"] == "grown"
            assert not any(p in optimizer.state for pair in params for p in pair)
            copies = torch.tensor([0, 1, 2, 1, 1, 2, 2])  # nodes 0-2 kept; 3,4 <- node 1; 5,6 <- node 2
            flat = [p for pair in after for p in pair]
            for old_state, p in zip(state, flat):
                for key, value in old_state.items():
                    assert optimizer.state[p][key].shape == p.shape
                    assert torch.equal(optimizer.state[p][key], value[:, copies])
        if step == 6:  # TC -> TF at the same height: carried, moments untouched
            assert event["tree"] == "carried"
            flat = [p for pair in after for p in pair]
            for old_state, p in zip(state, flat):
                for key, value in old_state.items():
                    assert torch.equal(optimizer.state[p][key], value)
        adam_step(model, optimizer, seed=step)  # the optimizer steps every parameter it holds
    assert [core.registry_name for core in model.attention_cores()] == ["treeformer-tf"] * 2


def test_sync_optimizer_drops_orphans_and_resets_unmapped_grown_state():
    from harness.training.optimizer_state import sync_optimizer

    model = torch.nn.Linear(3, 2)
    optimizer = torch.optim.AdamW(model.parameters())
    model(torch.ones(1, 3)).sum().backward()
    optimizer.step()
    old_bias = model.bias
    model.bias = torch.nn.Parameter(torch.zeros(2))  # a swapped-in parameter: the old one is an orphan
    with torch.no_grad():
        model.weight.data = torch.zeros(4, 3)  # grown in place with no source: state must be reset
    done = sync_optimizer(optimizer, model)
    assert done == {"added": 1, "dropped": 1, "carried": 0, "reset": 1}
    assert old_bias not in optimizer.state and model.weight not in optimizer.state
    assert [len(group["params"]) for group in optimizer.param_groups] == [1, 1]


def test_resume_after_switches_restores_the_same_run(tmp_path):
    """A crash after a grow and a carry: the resumed run replays the switches (same param group
    layout, so the saved optimizer state loads) and ends where the uninterrupted run ended."""
    from conftest import TINY_TASKS
    from harness.training.loop import Splits, train
    from harness.training.train_config import TrainConfig

    class Crash:
        def on_step_start(self, step, model):
            if step == 10:
                raise RuntimeError("simulated crash")

    task = TINY_TASKS["tiny-majority"]
    data = task.prepare(None, {"num_examples": 64})
    splits = Splits(data["train"], data["val"], data["test"])
    section = {"warmup_attention": "full", "stages": [
        {"at_step": 2, "attention": "treeformer-tc", "options": {"height": 2}},
        {"at_step": 4, "attention": "treeformer-tc", "options": {"height": 3}},
        {"at_step": 6, "attention": "treeformer-tf", "options": {"height": 3}},
    ]}
    config = TrainConfig(steps=14, batch_size=8, lr=3e-3, schedule="constant", warmup_steps=1, eval_every=4)

    def run(extra=(), path=None):
        torch.manual_seed(0)
        model_config = ModelConfig(vocab_size=task.vocab_size, num_classes=2, max_seq_len=task.seq_len, emb_dim=16,
                                   qkv_dim=16, mlp_dim=32, num_layers=1, num_heads=2, dropout=0.0, pad_id=task.pad_id)
        model = EncoderClassifier(model_config)
        callbacks = build_bootstrap(section, model_config) + list(extra)
        result = train(model, splits, config, head=task.head, seed=0, device=torch.device("cpu"), callbacks=callbacks,
                       checkpoint_path=path, checkpoint_key="k", progress=False)
        return model, result

    model, whole = run()
    path = tmp_path / "ckpt.pt"
    with pytest.raises(RuntimeError, match="simulated crash"):
        run([Crash()], path)
    saved = torch.load(path, weights_only=True)
    assert saved["step"] == 8 and len(saved["optimizer"]["param_groups"]) == 2  # initial group + the tree's
    resumed_model, resumed = run(path=path)
    assert resumed.events == whole.events
    assert [e["tree"] for e in whole.events] == ["none", "new", "grown", "carried"]
    assert resumed.metrics.history == [
        {**point} for point in whole.metrics.history
    ]
    assert resumed.metrics.test_accuracy == whole.metrics.test_accuracy
    for (name, p), q in zip(model.named_parameters(), resumed_model.parameters()):
        assert torch.equal(p, q), name


@pytest.mark.parametrize("first, second, label", [(True, False, "dropped"), (False, True, "new")])
@pytest.mark.parametrize("grow", [False, True])
def test_and_bias_mismatch_between_stages(first, second, label, grow):
    """A stage without the AND bias drops the learned one (routing becomes the plain walk); a stage
    adding one starts it at zero, which keeps every leaf. Either way the hyperplanes are carried."""
    torch.manual_seed(2)
    config = tiny_config(attention="treeformer-tc", attention_options={"height": 2, "and_bias": first})
    model = EncoderClassifier(config)
    if first:
        with torch.no_grad():
            for core in model.attention_cores():
                core.tree.and_bias.normal_()
    section = {"warmup_attention": None, "stages": [
        {"at_step": 0, "attention": "treeformer-tc", "options": {"height": 2, "and_bias": first}},
        {"at_step": 1, "attention": "treeformer-tf", "options": {"height": 3 if grow else 2, "and_bias": second}},
    ]}
    (callback,) = build_bootstrap(section, config)
    callback.on_step_start(0, model)
    weights = [core.tree.weight for core in model.attention_cores()]
    tokens, _ = batch(seed=3)
    event = callback.on_step_start(1, model)
    assert event["and_bias"] == label and event["tree"] == ("grown" if grow else "carried")
    cores = model.attention_cores()
    for core, weight in zip(cores, weights):  # the same Parameter, or its grown copy
        assert core.tree.weight is (callback.replaced[weight][0] if grow else weight)
    assert all((core.tree.and_bias is not None) == second for core in cores)
    if second:  # a zero bias: the argmax of the leaf scores is the walked leaf
        x = torch.randn(2, 2, SEQ_LEN, 8)
        for core in cores:
            assert torch.count_nonzero(core.tree.and_bias) == 0
            with torch.no_grad():
                scored = core.tree.route(x, None).leaf
                bias, core.tree.and_bias = core.tree.and_bias, None
                walked = core.tree.route(x, None, walk=True).leaf
                core.tree.and_bias = bias
            assert torch.equal(scored, walked)
    with torch.no_grad():
        assert torch.isfinite(model(tokens)).all()
