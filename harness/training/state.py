"""The training state: what a run carries from step to step, and exactly what its checkpoint holds.

The checkpoint format is defined here once: `checkpoint` writes it, `from_checkpoint` reads it
(the loop on resume, the sweep when it keeps what a killed run measured).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Optional, Sequence

import torch
from torch import nn

from harness.training.checkpoints import rng_state
from harness.training.metrics import RunMetrics


@dataclass
class TrainingState:
    """Progress, best validation state and learning curve of one run."""

    step: int = 0  # steps finished
    best_accuracy: float = -1.0  # best validation accuracy since the method last changed
    best_step: Optional[int] = None
    best_state: Optional[dict[str, torch.Tensor]] = None  # CPU copy of the model at best_step
    history: list[dict] = field(default_factory=list)  # {"step", "train_loss", "val_accuracy"}
    events: list[dict] = field(default_factory=list)  # callback events, each with its step
    evals_without_gain: int = 0
    seconds: float = 0.0  # time spent in training steps, compiling excluded
    compile_seconds: float = 0.0  # time torch spent compiling inside training steps (train.compile)
    elapsed: float = 0.0  # wall-clock time of the run in earlier processes (before a resume)

    def record_evaluation(self, val_accuracy: float, train_loss: float, model: nn.Module) -> None:
        """Adds a point to the curve; keeps the model's state when it is the best so far."""
        self.history.append({"step": self.step, "train_loss": train_loss, "val_accuracy": val_accuracy})
        if val_accuracy > self.best_accuracy:
            self.best_accuracy, self.best_step, self.evals_without_gain = val_accuracy, self.step, 0
            self.best_state = {key: value.detach().to("cpu", copy=True) for key, value in model.state_dict().items()}
        else:
            self.evals_without_gain += 1

    def forget_best(self) -> None:
        """The method changed: the best state is chosen afresh from the next evaluation."""
        self.best_accuracy, self.best_step, self.best_state, self.evals_without_gain = -1.0, None, None, 0

    def measured(self) -> RunMetrics:
        """What the steps so far measured; test accuracy, token rate, memory and the still-learning
        verdict need the run's end and stay null."""
        return RunMetrics(
            val_accuracy=self.best_accuracy if self.best_state is not None else None,
            best_step=self.best_step, steps=self.step, train_seconds=self.seconds, compile_seconds=self.compile_seconds,
            steps_per_second=self.step / self.seconds if self.seconds else None, history=list(self.history),
        )

    def checkpoint(self, key: str, model: nn.Module, optimizer: torch.optim.Optimizer,
                   callbacks: Sequence[Any], elapsed: float) -> dict[str, Any]:
        """The checkpoint of this state (tensors and plain values only); `elapsed` is the run's
        wall-clock time so far, `key` the config hash that guards resume."""
        return {
            "key": key, "step": self.step, "model": model.state_dict(), "optimizer": optimizer.state_dict(),
            "rng": rng_state(), "best_accuracy": self.best_accuracy, "best_step": self.best_step,
            "best_state": self.best_state, "history": self.history, "events": self.events,
            "evals_without_gain": self.evals_without_gain, "seconds": self.seconds,
            "compile_seconds": self.compile_seconds, "elapsed": elapsed,
            "callbacks": [cb.state_dict() if hasattr(cb, "state_dict") else None for cb in callbacks],
        }

    @classmethod
    def from_checkpoint(cls, saved: dict[str, Any]) -> "TrainingState":
        """The state a checkpoint holds (model, optimizer, RNG and callbacks are restored by the loop)."""
        return cls(step=int(saved["step"]), best_accuracy=saved["best_accuracy"], best_step=saved["best_step"],
                   best_state=saved["best_state"], history=list(saved["history"]), events=list(saved["events"]),
                   evals_without_gain=saved["evals_without_gain"], seconds=float(saved["seconds"]),
                   compile_seconds=float(saved.get("compile_seconds", 0.0)),  # absent from older checkpoints
                   elapsed=float(saved["elapsed"]))
