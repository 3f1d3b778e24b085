"""Accuracy baselines of a split: what a model that learned nothing scores.

A result is read against these: a method at the majority-class share has learned nothing, however
its number looks in a table. Counted on the scored targets the accuracy is computed on: one label
per example for sequence and dual heads, every position whose target is not -100 for token heads.
"""

from __future__ import annotations

from typing import Any

import numpy as np

IGNORED = -100  # token heads: positions that are not scored (harness/training/loop.py)


def class_baselines(targets: Any, num_classes: int) -> dict[str, float]:
    """{"majority": share of the most frequent scored target, "chance": 1 / num_classes}."""
    values = np.asarray(targets).reshape(-1)
    scored = values[values != IGNORED]
    majority = float(np.bincount(scored.astype(np.int64)).max() / scored.size) if scored.size else 0.0
    return {"majority": majority, "chance": 1.0 / num_classes}
