"""The optimiser, schedule and budget of one run: what the training loop needs to know, checked on creation."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, Optional, get_args

from bench_common import BenchError


CompileMode = Literal["off", "on"]
COMPILE_MODES = get_args(CompileMode)


def default_eval_every(steps: int) -> int:
    """Ten evaluations per run: a learning curve with a shape, and enough points for `still_learning`."""
    return max(1, steps // 10)


@dataclass
class TrainConfig:
    """Optimiser, schedule and budget of one run (defaults: a small CPU-sized run)."""

    steps: int = 1000
    batch_size: int = 32
    lr: float = 1e-3
    weight_decay: float = 0.0
    schedule: Literal["rsqrt", "cosine", "onecycle", "constant"] = "cosine"
    warmup_steps: int = 100
    grad_clip: Optional[float] = None
    eval_every: Optional[int] = None  # None = from the budget: max(1, steps // 10), >= 10 evaluations
    eval_batches: Optional[int] = None  # None = the whole validation split
    early_stop_patience: Optional[int] = None  # evaluations without improvement; None = never stop
    betas: tuple[float, float] = (0.9, 0.98)  # LRA's Adam betas
    eps: float = 1e-9  # LRA's Adam epsilon
    time_limit_s: Optional[float] = None
    # Forward-pass precision: "bf16" autocast or plain "fp32"; null = the device's default
    # (`resolve_precision`), resolved when a run config is built so the record names what ran.
    precision: Optional[Literal["fp32", "bf16"]] = None
    # torch.compile (inductor) of the training forward and backward; evaluation stays eager
    # (harness/training/compiling.py).
    compile: CompileMode = "off"

    def __post_init__(self) -> None:
        self.betas = tuple(self.betas)
        if self.eval_every is None:  # resolved here, so the resolved config shows the value used
            self.eval_every = default_eval_every(self.steps)
        positive = {"steps": self.steps, "batch_size": self.batch_size, "lr": self.lr,
                    "eval_every": self.eval_every, "eps": self.eps}
        for name, value in positive.items():
            if value <= 0:
                raise BenchError(f"train.{name} must be > 0, got {value!r}")
        for name in ("weight_decay", "warmup_steps"):
            if getattr(self, name) < 0:
                raise BenchError(f"train.{name} must be >= 0, got {getattr(self, name)!r}")
        for name in ("grad_clip", "eval_batches", "early_stop_patience", "time_limit_s"):
            value = getattr(self, name)
            if value is not None and value <= 0:
                raise BenchError(f"train.{name} must be > 0 or null, got {value!r}")
        if self.compile not in COMPILE_MODES:
            raise BenchError(f"train.compile must be one of {', '.join(COMPILE_MODES)}, got {self.compile!r}")
        if len(self.betas) != 2 or not all(0 <= b < 1 for b in self.betas):
            raise BenchError(f"train.betas must be two numbers in [0, 1), got {list(self.betas)!r}")


PRECISIONS = ("fp32", "bf16")


def resolve_precision(precision: Optional[str], device_type: str) -> str:
    """The precision a run uses: as configured, else bf16 on CUDA (as LRA's GPU ports) and fp32 elsewhere."""
    if precision is None:
        return "bf16" if device_type == "cuda" else "fp32"
    if precision not in PRECISIONS:
        raise BenchError(f"train.precision must be one of {', '.join(PRECISIONS)} or null, got {precision!r}")
    return precision
