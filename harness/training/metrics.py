"""What one run measured: the `metrics` block of its record, defined once.

The training loop fills it, the sweep writes it into the record, a killed run's checkpoint
fills what it can, and readers check it against these fields. A new measurement is a new field
here; mark it `optional` when records written before it existed stay valid without it.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Optional

# Field metadata: records written before this field existed lack it (readers show it as unknown).
OPTIONAL = {"optional": True}


@dataclass
class RunMetrics:
    """Accuracy at the best validation step, throughput, memory and the learning curve of one run."""

    val_accuracy: Optional[float] = None  # of the best evaluation (null before any evaluation)
    test_accuracy: Optional[float] = None  # of the best-validation state; null when never tested
    best_step: Optional[int] = None
    steps: Optional[int] = None  # steps taken
    train_seconds: Optional[float] = None  # time in training steps (evaluation and compile_seconds excluded)
    steps_per_second: Optional[float] = None
    tokens_per_second: Optional[float] = None
    # CUDA: allocator high-water mark of the run; CPU: the process's resident-set high-water mark.
    peak_memory_mb: Optional[float] = None
    history: list[dict] = field(default_factory=list)  # {"step", "train_loss", "val_accuracy"} per evaluation
    still_learning: Optional[bool] = field(default=None, metadata=OPTIONAL)  # see `still_learning`
    # {"majority", "chance"} of the test split's scored targets.
    baselines: Optional[dict[str, float]] = field(default=None, metadata=OPTIONAL)
    # Seconds torch spent compiling inside the training steps (`compiling.Compilation`; 0 when
    # train.compile is off), kept out of train_seconds so steps_per_second is the compiled code's rate.
    compile_seconds: Optional[float] = field(default=None, metadata=OPTIONAL)

    def as_record(self) -> dict[str, Any]:
        """The JSON form a record carries."""
        return dataclasses.asdict(self)


# The keys every record's metrics hold (what readers check); optional ones may be missing.
METRIC_KEYS = tuple(f.name for f in dataclasses.fields(RunMetrics) if not f.metadata.get("optional"))


STILL_LEARNING_WINDOW = 0.3  # the last 30% of the steps run
STILL_LEARNING_RISE = 0.02  # more than 2 accuracy points


def still_learning(history: list[dict], steps: int) -> Optional[bool]:
    """Whether validation accuracy rose by more than 2 points over the last 30% of `steps`.

    The rise is the last evaluation's accuracy minus that of the last evaluation at or before
    step 0.7 * steps (the window's start). True means the budget ended the run while it was still
    improving, so its accuracy understates the method. None when the history cannot tell (no
    evaluation before the window, or none inside it).
    """
    start = steps * (1.0 - STILL_LEARNING_WINDOW)
    before = [point for point in history if point["step"] <= start]
    if not before or history[-1]["step"] <= start:
        return None
    rise = history[-1]["val_accuracy"] - before[-1]["val_accuracy"]
    return rise > STILL_LEARNING_RISE + 1e-9  # 0.52 - 0.50 is 0.0200...02 in floats: not "more than"
