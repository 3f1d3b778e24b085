"""Shared fixtures. Tests run offline and on CPU; plugins registered by a test are removed after it."""

import os
import signal

import pytest
import torch

os.environ.setdefault("MPLBACKEND", "Agg")
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
# Tiny test models run fastest on one thread, and a shared CI machine stays predictable.
torch.set_num_threads(1)


@pytest.fixture
def restore_attention_registry():
    """Undo any attention registrations a test makes, so tests stay independent."""
    from methods import ATTENTION

    before = set(ATTENTION.names())
    yield
    for name in set(ATTENTION.names()) - before:
        ATTENTION.remove(name)


# --------------------------------------------------------------------------- tiny tasks
# Task objects of the `lra` Task shape (lra/task.py), small enough to learn in seconds, so harness
# tests need neither the task package's generators nor real data.

from dataclasses import dataclass, field  # noqa: E402
from typing import Any  # noqa: E402

import numpy as np  # noqa: E402

from bench_common import BenchError  # noqa: E402


@dataclass
class TinySplit:
    inputs: np.ndarray
    targets: np.ndarray


@dataclass
class TinyTask:
    """'majority': is token 1 more frequent than token 2? 'copy': per-token echo of the input."""

    name: str = "tiny-majority"
    version: str = "1"
    description: str = "tiny test task"
    source: str = "generated in tests"
    seq_len: int = 16
    vocab_size: int = 4
    num_classes: int = 2
    head: str = "sequence"
    pad_id: Any = 0
    metric: str = "accuracy"
    offline: bool = True
    params: dict = field(default_factory=lambda: {"num_examples": 256})
    model_configs: dict = field(default_factory=lambda: {
        "lra": {"emb_dim": 16, "qkv_dim": 16, "mlp_dim": 32, "num_layers": 1, "num_heads": 2, "dropout": 0.0},
        "uniform": {"emb_dim": 16, "qkv_dim": 16, "mlp_dim": 32, "num_layers": 1, "num_heads": 2, "dropout": 0.0},
    })
    train_configs: dict = field(default_factory=lambda: {
        "lra": {"steps": 30, "batch_size": 16, "lr": 3e-3, "eval_every": 10, "warmup_steps": 3, "schedule": "constant"},
        "uniform": {"steps": 30, "batch_size": 16, "lr": 3e-3, "eval_every": 10, "warmup_steps": 3, "schedule": "constant"},
    })

    def shortcut_baselines(self, split, params: dict) -> dict:
        return {}  # no shortcut rule for these tasks

    def check_params(self, params: dict) -> dict:
        unknown = set(params) - {"num_examples"}
        if unknown:
            raise BenchError(f"task '{self.name}': unknown param '{sorted(unknown)[0]}'; accepted: num_examples")
        return {**self.params, **params}

    def model_config(self, family: str, params: dict) -> dict:
        params = self.check_params(params)
        shape = {"vocab_size": self.vocab_size, "num_classes": self.num_classes, "max_seq_len": self.seq_len}
        return {**self.model_configs[family], **shape}

    def data_source(self, data_dir, params: dict) -> dict:
        """As lra's Task: generated data is named by its recipe."""
        import hashlib
        import json

        recipe = json.dumps([self.name, self.version, self.check_params(params)], sort_keys=True)
        return {"source": "generated", "root": None, "fingerprint": hashlib.sha256(recipe.encode()).hexdigest()[:16]}

    def prepare_data(self, data_dir, params: dict):
        from types import SimpleNamespace

        splits = self.prepare(data_dir, params)
        sizes = {name: len(split.targets) for name, split in splits.items()}
        return SimpleNamespace(splits=splits, data={**self.data_source(data_dir, params), "sizes": sizes})

    def prepare(self, data_dir, params: dict) -> dict:
        count = self.check_params(params)["num_examples"]
        splits = {}
        for offset, name in enumerate(("train", "val", "test")):
            rng = np.random.default_rng(100 + offset)
            size = count if name == "train" else max(32, count // 4)
            inputs = rng.integers(1, 3, size=(size, self.seq_len))
            if self.head == "token":
                targets = inputs.copy()
                targets[:, ::4] = -100  # some ignored positions
            else:
                targets = ((inputs == 1).sum(1) > (inputs == 2).sum(1)).astype(np.int64)
            splits[name] = TinySplit(inputs, targets)
        return splits


TINY_TASKS = {
    "tiny-majority": TinyTask(),
    "tiny-copy": TinyTask(name="tiny-copy", head="token", num_classes=4),
}


@pytest.fixture
def tiny_tasks(monkeypatch):
    """Makes the harness find the tiny tasks by name (other names go to the real registry)."""
    from harness.sweep import runner

    real = runner.load_task
    monkeypatch.setattr(runner, "load_task", lambda name: TINY_TASKS[name] if name in TINY_TASKS else real(name))
    return TINY_TASKS


@pytest.fixture
def tiny_suite(tiny_tasks):
    """A registered suite 'tiny' over the tiny majority task with full and sdpa (removed after)."""
    from harness.config.suites import SUITES, Suite, plain, register_suite

    suite = register_suite(Suite(name="tiny", description="tests", tasks=("tiny-majority",),
                                 methods=(plain("full"), plain("sdpa")), family="lra"))
    yield suite
    SUITES.remove("tiny")


def tiny_spec(tmp_path, method: str, sets=()):
    """The one run the `tiny` suite resolves for `method` with these `--set` values (needs `tiny_suite`)."""
    from harness.sweep.driver import SweepRequest, resolve_specs

    request = SweepRequest(suite="tiny", methods=[method], sets=list(sets), out=tmp_path / "out",
                           data_dir=tmp_path / "data", device="cpu")
    (spec,) = resolve_specs(request)
    return spec


def default_sigint() -> None:
    """`preexec_fn` of a child a test interrupts with SIGINT. A shell that starts the tests in the
    background (nohup, some CI runners) leaves SIGINT ignored, children inherit that, and Python
    then installs no KeyboardInterrupt handler: the child would finish instead of being interrupted."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)
