"""The training loop: it learns, tests the best state, resumes exactly, ends runs with a status."""

import math

import pytest
import torch

from harness.training.train_config import TrainConfig
from harness.training.model import EncoderClassifier, ModelConfig
from harness.training.loop import Splits, evaluate, loss_and_correct, lr_factor, train
from conftest import TINY_TASKS


def build(task, dropout=0.0, seed=0):
    torch.manual_seed(seed)
    config = ModelConfig(vocab_size=task.vocab_size, num_classes=task.num_classes, max_seq_len=task.seq_len,
                         emb_dim=16, qkv_dim=16, mlp_dim=32, num_layers=1, num_heads=2, dropout=dropout,
                         head=task.head, pad_id=task.pad_id)
    return EncoderClassifier(config)


def splits(task, num_examples=256):
    data = task.prepare(None, {"num_examples": num_examples})
    return Splits(data["train"], data["val"], data["test"])


def run(task, config, **kwargs):
    model = kwargs.pop("model", None) or build(task, kwargs.pop("dropout", 0.0))
    return model, train(model, splits(task), config, head=task.head, seed=0, device=torch.device("cpu"),
                        progress=False, **kwargs)


def test_loop_learns_a_sequence_task():
    config = TrainConfig(steps=60, batch_size=16, lr=3e-3, schedule="constant", warmup_steps=3, eval_every=20)
    _, result = run(TINY_TASKS["tiny-majority"], config)
    history = result.metrics.history
    assert result.status == "ok"
    assert history[-1]["train_loss"] < history[0]["train_loss"]
    assert result.metrics.test_accuracy > 0.85  # majority of 16 tokens: chance is about 0.5
    assert [h["step"] for h in history] == [20, 40, 60]
    metrics = result.metrics
    assert metrics.steps == 60 and metrics.train_seconds > 0
    assert metrics.tokens_per_second == pytest.approx(metrics.steps_per_second * 16 * 16)  # batch x n
    assert 0 < metrics.peak_memory_mb < 64 * 1024


def test_loop_learns_a_token_task_ignoring_minus_100():
    config = TrainConfig(steps=60, batch_size=16, lr=3e-3, schedule="constant", warmup_steps=3, eval_every=30)
    _, result = run(TINY_TASKS["tiny-copy"], config)
    assert result.status == "ok" and result.metrics.test_accuracy > 0.9


def test_token_accuracy_counts_only_scored_positions():
    logits = torch.tensor([[[5.0, 0.0], [0.0, 5.0], [5.0, 0.0]]])  # (1, 3, 2): predicts 0, 1, 0
    targets = torch.tensor([[0, 0, -100]])
    loss, correct, scored = loss_and_correct(logits, targets, "token")
    assert (int(correct), int(scored)) == (1, 2)
    assert math.isfinite(float(loss))


class Sabotage:
    """After `step`, pins the classifier to one class: the last evaluation is worse than the best."""

    def __init__(self, step):
        self.step = step

    def on_step_start(self, step, model):
        if step == self.step:
            with torch.no_grad():
                model.classifier[-1].bias.copy_(torch.tensor([100.0, 0.0]))
        return None


def test_test_accuracy_is_that_of_the_best_validation_state_not_the_last():
    task = TINY_TASKS["tiny-majority"]
    config = TrainConfig(steps=90, batch_size=16, lr=3e-3, schedule="constant", warmup_steps=3, eval_every=30)
    model, result = run(task, config, callbacks=[Sabotage(60)])
    history = result.metrics.history
    assert history[-1]["val_accuracy"] < 0.7 < history[1]["val_accuracy"]  # last is worse than best
    assert result.metrics.best_step == 60
    assert result.metrics.val_accuracy == history[1]["val_accuracy"]
    assert result.metrics.test_accuracy > 0.85
    # The model handed back holds the best state: its test accuracy is the recorded one.
    test = splits(task).test
    assert evaluate(model, test, 16, None, "sequence", torch.device("cpu")) == result.metrics.test_accuracy


class Crash:
    def __init__(self, step):
        self.step = step

    def on_step_start(self, step, model):
        if step == self.step:
            raise RuntimeError("simulated crash")


def test_resume_from_checkpoint_gives_bit_identical_metrics(tmp_path):
    task = TINY_TASKS["tiny-majority"]
    config = TrainConfig(steps=40, batch_size=16, lr=3e-3, schedule="cosine", warmup_steps=5, eval_every=10)
    _, whole = run(task, config, dropout=0.1)

    path = tmp_path / "ckpt.pt"
    with pytest.raises(RuntimeError, match="simulated crash"):
        run(task, config, dropout=0.1, checkpoint_path=path, checkpoint_key="k", callbacks=[Crash(25)])
    assert path.exists()
    _, resumed = run(task, config, dropout=0.1, checkpoint_path=path, checkpoint_key="k")
    for key in ("val_accuracy", "test_accuracy", "best_step", "steps"):
        assert getattr(resumed.metrics, key) == getattr(whole.metrics, key), key
    strip = lambda history: [(h["step"], h["train_loss"], h["val_accuracy"]) for h in history]  # noqa: E731
    assert strip(resumed.metrics.history) == strip(whole.metrics.history)


def test_checkpoint_of_another_config_is_not_resumed(tmp_path):
    task = TINY_TASKS["tiny-majority"]
    config = TrainConfig(steps=20, batch_size=16, eval_every=10, warmup_steps=2)
    path = tmp_path / "ckpt.pt"
    run(task, config, checkpoint_path=path, checkpoint_key="old")
    _, fresh = run(task, config, checkpoint_path=path, checkpoint_key="new")
    _, plain = run(task, config)
    assert fresh.metrics.history[0]["train_loss"] == plain.metrics.history[0]["train_loss"]



def test_nan_loss_is_diverged_with_its_step():
    task = TINY_TASKS["tiny-majority"]

    class NaNWeights:
        def on_step_start(self, step, model):
            if step == 12:
                with torch.no_grad():
                    model.classifier[0].weight.fill_(float("nan"))

    config = TrainConfig(steps=40, batch_size=16, eval_every=10, warmup_steps=2)
    _, result = run(task, config, callbacks=[NaNWeights()])
    assert result.status == "diverged"
    assert "step 13" in result.reason
    assert result.metrics.steps == 12 and result.metrics.best_step == 10  # measured so far is kept
    assert result.metrics.test_accuracy is not None


def test_time_limit_is_timeout_and_keeps_metrics():
    config = TrainConfig(steps=1000, batch_size=16, eval_every=1, warmup_steps=2, time_limit_s=1e-6)
    _, result = run(TINY_TASKS["tiny-majority"], config)
    assert result.status == "timeout"
    assert result.metrics.steps == 1 and result.metrics.val_accuracy is not None


def test_memory_error_is_oom():
    class Exhaust:
        def on_step_start(self, step, model):
            if step == 3:
                raise MemoryError("cannot allocate")

    config = TrainConfig(steps=20, batch_size=16, eval_every=2, warmup_steps=2)
    _, result = run(TINY_TASKS["tiny-majority"], config, callbacks=[Exhaust()])
    assert result.status == "oom" and result.metrics.steps == 3 and "cannot allocate" in result.reason


class SwapToSdpa:
    """A bootstrap-like callback: swaps layer 0 to a core with a parameter at step 5."""

    def on_step_start(self, step, model):
        if step == 5:
            model.set_attention([0], "scaled-test-core")
            return {"switch": "scaled-test-core"}
        return None


def test_callback_event_adds_new_parameters_and_resumes(tmp_path, restore_attention_registry):
    from methods import AttentionMethod, register_attention

    @register_attention("scaled-test-core")
    class Scaled(AttentionMethod):
        def __init__(self, num_heads=0, head_dim=0, max_seq_len=0):
            super().__init__()
            self.scale = torch.nn.Parameter(torch.ones(()))

        def forward(self, q, k, v, key_padding_mask=None):
            return torch.nn.functional.scaled_dot_product_attention(q * self.scale, k, v)

        def macs(self, seq_len):
            return 0

    task = TINY_TASKS["tiny-majority"]
    config = TrainConfig(steps=20, batch_size=16, eval_every=10, warmup_steps=2)
    model, whole = run(task, config, callbacks=[SwapToSdpa()])
    assert whole.events == [{"step": 5, "switch": "scaled-test-core"}]
    assert float(model.attention_cores()[0].scale.detach()) != 1.0  # the new parameter was trained
    assert whole.metrics.best_step >= 10  # best chosen after the switch only

    path = tmp_path / "ckpt.pt"
    with pytest.raises(RuntimeError):
        run(task, config, checkpoint_path=path, checkpoint_key="k", callbacks=[SwapToSdpa(), Crash(15)])
    _, resumed = run(task, config, checkpoint_path=path, checkpoint_key="k", callbacks=[SwapToSdpa()])
    assert resumed.events == whole.events
    assert resumed.metrics.test_accuracy == whole.metrics.test_accuracy
    assert resumed.metrics.history[-1]["train_loss"] == whole.metrics.history[-1]["train_loss"]


@pytest.mark.parametrize("schedule", ["rsqrt", "cosine", "onecycle", "constant"])
def test_schedules_warm_up_and_stay_in_range(schedule):
    config = TrainConfig(steps=100, warmup_steps=10, schedule=schedule)
    factors = [lr_factor(s, config) for s in range(100)]
    assert factors[0] < factors[9]  # warm-up rises
    assert all(0 <= f <= 1 for f in factors)
    if schedule in ("cosine", "onecycle"):
        assert factors[-1] < 0.05  # decays to about zero at the end
    if schedule == "rsqrt":
        assert factors[9] == pytest.approx(1 / math.sqrt(10)) and factors[99] == pytest.approx(0.1)


def test_early_stopping_ends_after_patience_evaluations_without_gain():
    task = TINY_TASKS["tiny-majority"]
    config = TrainConfig(steps=200, batch_size=16, lr=3e-3, schedule="constant", warmup_steps=3, eval_every=10,
                         early_stop_patience=2)
    _, result = run(task, config, callbacks=[Sabotage(60)])  # no gain is possible after step 60
    steps = [h["step"] for h in result.metrics.history]
    assert result.status == "ok" and result.metrics.steps < 200
    assert steps[-1] - result.metrics.best_step == 20  # stopped two evaluations after the best


def test_gradient_clipping_bounds_the_update():
    task = TINY_TASKS["tiny-majority"]
    clipped = TrainConfig(steps=1, batch_size=16, lr=1.0, schedule="constant", warmup_steps=0, eval_every=1,
                          grad_clip=1e-6, betas=(0.0, 0.0), eps=1.0)
    model = build(task)
    before = [p.detach().clone() for p in model.parameters()]
    run(task, clipped, model=model)
    # Adam with beta2=0 and eps=1 moves each weight by lr*g/(|g|+1): tiny when the norm is clipped.
    change = max(float((p.detach() - b).abs().max()) for p, b in zip(model.parameters(), before))
    assert change < 1e-5


def test_torch_allocator_failure_is_oom_other_runtime_errors_propagate():
    class Allocator:
        def __init__(self, message):
            self.message = message

        def on_step_start(self, step, model):
            if step == 2:
                raise RuntimeError(self.message)

    config = TrainConfig(steps=10, batch_size=16, eval_every=5, warmup_steps=2)
    _, result = run(TINY_TASKS["tiny-majority"], config,
                    callbacks=[Allocator("DefaultCPUAllocator: can't allocate memory: you tried to allocate 9 GB")])
    assert result.status == "oom" and result.metrics.steps == 2
    with pytest.raises(RuntimeError, match="unrelated"):
        run(TINY_TASKS["tiny-majority"], config, callbacks=[Allocator("unrelated")])
