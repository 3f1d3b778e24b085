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
    ],
)
def test_bad_sections_fail_before_training_in_one_line(section, message):
    with pytest.raises(BenchError, match=message) as error:
        validate_bootstrap(section)
    assert "\n" not in str(error.value)


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
