"""train.compile: checked, hash-neutral while off; compiled training follows eager training.

The training comparisons compile with inductor (C++ through the system compiler): a minute or more
each on 2 busy cores, so they are `heavy`. Everything else here runs in the default suite.
"""

import json
import time
from pathlib import Path

import pytest
import torch

from bench_common import BenchError
from harness.config import layered as cfg
from harness.training.checkpoints import load_checkpoint
from harness.training.compiling import INDUCTOR_CACHE_ENV, Compilation, inductor_cache_dir
from harness.training.loop import Splits, train
from harness.training.model import EncoderClassifier, ModelConfig
from harness.training.train_config import TrainConfig
from conftest import TINY_TASKS, tiny_spec

RESULTS = Path(__file__).resolve().parents[1] / "results"
TASK = TINY_TASKS["tiny-majority"]


def test_compile_is_off_by_default_and_checked():
    assert TrainConfig().compile == "off"
    with pytest.raises(BenchError, match=r"^train.compile must be one of off, on, got 'yes'$"):
        TrainConfig(compile="yes")


def test_set_train_compile_is_typed_by_its_field():
    assert cfg.parse_set("train.compile=on") == {"train": {"compile": "on"}}
    with pytest.raises(BenchError, match=r"--set train.compile: expected one of 'off', 'on', got 'fast'"):
        cfg.parse_set("train.compile=fast")


def test_off_leaves_the_config_hash_of_existing_records_unchanged():
    # a record committed before the option existed
    record = json.loads(next((RESULTS / "calibration" / "quick" / "x1" / "records").rglob("seed0.json")).read_text())
    config = dict(record["config"])
    assert "compile" not in config["train"] and cfg.config_hash(config) == record["config_hash"]
    config["train"] = {**config["train"], "compile": "off"}
    assert cfg.config_hash(config) == record["config_hash"]
    config["train"]["compile"] = "on"
    assert cfg.config_hash(config) != record["config_hash"]


def test_resolved_configs_name_the_option(tmp_path, tiny_suite):
    off, on = tiny_spec(tmp_path, "sdpa"), tiny_spec(tmp_path, "sdpa", ["train.compile=on"])
    assert off.config["train"]["compile"] == "off" and on.config["train"]["compile"] == "on"
    assert off.config_hash != on.config_hash


def test_the_inductor_cache_has_a_stable_default_and_keeps_a_chosen_folder(monkeypatch, tmp_path):
    import platformdirs

    monkeypatch.setenv(INDUCTOR_CACHE_ENV, "")  # unset for the code; restored after the test
    expected = Path(platformdirs.user_cache_dir("treeformer-bench")) / "torchinductor"
    assert inductor_cache_dir() == expected and inductor_cache_dir() == expected
    monkeypatch.setenv(INDUCTOR_CACHE_ENV, str(tmp_path))
    assert inductor_cache_dir() == tmp_path


def test_off_wraps_nothing_and_counts_nothing():
    net = torch.nn.Linear(2, 2)
    compilation = Compilation("off")
    assert compilation.wrap(net) is net
    compilation.close()
    assert compilation.seconds == 0.0


def test_the_clock_counts_compiling_while_open_only(monkeypatch, tmp_path):
    monkeypatch.setenv(INDUCTOR_CACHE_ENV, str(tmp_path))
    compilation = Compilation("on")
    double = torch.compile(lambda x: x * 2, backend="eager")  # tracing only: counted, and fast
    double(torch.ones(3))
    counted = compilation.seconds
    compilation.close()
    torch.compile(lambda x: x * 3, backend="eager")(torch.ones(3))
    assert counted > 0 and compilation.seconds == counted


def test_the_record_names_the_cores_a_compiled_run_ran_eagerly():
    from harness.sweep.runner import _diagnostics

    config = ModelConfig(vocab_size=8, max_seq_len=16, emb_dim=16, qkv_dim=16, mlp_dim=16, num_layers=2,
                         attention="treeformer-tf", attention_options={"height": 2},
                         layer_attention={0: {"name": "treeformer-tc", "options": {"height": 2}}})
    model = EncoderClassifier(config)
    assert _diagnostics(model, "on")["compile"] == {"eager_methods": ["treeformer-tf"]}
    assert "compile" not in _diagnostics(model, "off")


def test_a_data_dependent_core_is_not_traced(monkeypatch, tmp_path):
    """TF runs eagerly inside a compiled model: dynamo never traces its forward."""
    from methods.treeformer.tf import TreeformerTF

    monkeypatch.setenv(INDUCTOR_CACHE_ENV, str(tmp_path))
    traced = []
    forward = TreeformerTF.forward

    def spy(self, *args, **kwargs):
        traced.append(torch.compiler.is_compiling())
        return forward(self, *args, **kwargs)

    monkeypatch.setattr(TreeformerTF, "forward", spy)
    model = EncoderClassifier(tiny_model_config("treeformer-tf"))
    Compilation("on").close()  # a fresh dynamo state, as a run starts with
    torch.compile(model, backend="eager")(torch.randint(0, TASK.vocab_size, (2, TASK.seq_len)))
    assert traced and not any(traced)


# --------------------------------------------------------------------------- compiled training


def tiny_model_config(method: str) -> ModelConfig:
    """The smoke suite's tiny shape, narrower still: compile time grows with the graph."""
    options = {"height": 2} if method.startswith("treeformer") else {}
    return ModelConfig(vocab_size=TASK.vocab_size, num_classes=TASK.num_classes, max_seq_len=TASK.seq_len,
                       emb_dim=16, qkv_dim=16, mlp_dim=32, num_layers=1, num_heads=2, dropout=0.0,
                       head=TASK.head, pad_id=TASK.pad_id, attention=method, attention_options=options)


@pytest.fixture
def float64():
    """Inductor's C++ backend computes in double: eager and compiled then differ by rounding alone."""
    before = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    yield
    torch.set_default_dtype(before)


def train_tiny(method: str, compile_mode: str, checkpoint_path=None):
    """(model, result, wall-clock seconds of `train`)."""
    torch.manual_seed(0)
    model = EncoderClassifier(tiny_model_config(method))
    data = TASK.prepare(None, {"num_examples": 64})
    config = TrainConfig(steps=4, batch_size=8, lr=1e-2, schedule="constant", warmup_steps=1, eval_every=2,
                         eval_batches=1, compile=compile_mode)
    start = time.perf_counter()
    result = train(model, Splits(data["train"], data["val"], data["test"]), config, head=TASK.head, seed=0,
                   device=torch.device("cpu"), checkpoint_path=checkpoint_path, progress=False)
    return model, result, time.perf_counter() - start


@pytest.mark.heavy
@pytest.mark.parametrize("method", ["sdpa", "treeformer-tf", "treeformer-tc"])
def test_compiled_training_follows_eager_training(method, float64, monkeypatch, tmp_path):
    monkeypatch.setenv(INDUCTOR_CACHE_ENV, str(tmp_path / "inductor"))
    eager_model, eager, _ = train_tiny(method, "off")
    model, compiled, wall = train_tiny(method, "on", checkpoint_path=tmp_path / "run.pt")
    assert compiled.status == eager.status == "ok"
    losses = [point["train_loss"] for point in compiled.metrics.history]
    assert losses == pytest.approx([point["train_loss"] for point in eager.metrics.history], rel=1e-9)
    assert compiled.metrics.val_accuracy == eager.metrics.val_accuracy
    for (name, value), (_, expected) in zip(model.state_dict().items(), eager_model.state_dict().items()):
        torch.testing.assert_close(value, expected, rtol=1e-9, atol=1e-12, msg=name)
    assert compiled.metrics.compile_seconds > 0 and eager.metrics.compile_seconds == 0.0
    # compiling is counted once, apart from the steps (counted in both, the two would exceed the wall time)
    assert compiled.metrics.train_seconds + compiled.metrics.compile_seconds <= wall
    # the checkpoint holds the bare model's keys: an eager model loads it as it is
    saved = load_checkpoint(tmp_path / "run.pt")
    assert not any(key.startswith("_orig_mod.") for key in saved["model"])
    EncoderClassifier(tiny_model_config(method)).load_state_dict(saved["model"])
