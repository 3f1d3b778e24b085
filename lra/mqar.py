"""Multi-query associative recall (Arora et al. 2023, "Zoology"), for a bidirectional encoder.

Each sequence binds `num_pairs` distinct keys to values, then asks for every key once at random
later positions; the target at a query position is the key's value (per-token head, -100
elsewhere). Remaining positions hold a filler token, so every method sees the full length.

Two layouts:
- "single" (default): one position per pair. Embedding tables hold one id per token, so a pair is
  the joint id of (key, value) and a query is a query-marked key id. The model must look up, for a
  query, the position whose key part matches and read its value part: recall, with no neighbour
  to copy from.
- "classic": Zoology's layout, key and value on adjacent positions (k1 v1 k2 v2 ...), queries are
  the bare key ids. Bidirectional attention sees the token after each query, so it is left as filler.

Ids: 0 pad (unused), 1 filler, then the layout's tokens; targets are value indices 0..num_values-1.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from bench_common import BenchError
from lra.cache import Split
from lra.fingerprint import Source
from lra.task import IGNORE_INDEX, Built, Loader, Task

FILLER = 1
FIRST_ID = 2


def vocab_size(params: dict[str, Any]) -> int:
    keys, values = params["num_keys"], params["num_values"]
    if params["layout"] == "single":
        return FIRST_ID + keys * values + keys  # joint pair ids, then query ids
    return FIRST_ID + keys + values


def context_length(params: dict[str, Any]) -> int:
    """Positions taken by the key-value context (queries go after it)."""
    return params["num_pairs"] * (1 if params["layout"] == "single" else 2)


def generate(params: dict[str, Any], count: int, seed: int) -> Split:
    """`count` sequences of length seq_len with per-token targets."""
    rng = np.random.default_rng(seed)
    n, pairs = params["seq_len"], params["num_pairs"]
    keys_total, values_total = params["num_keys"], params["num_values"]
    single = params["layout"] == "single"
    context = context_length(params)
    keys = np.argsort(rng.random((count, keys_total)), axis=1)[:, :pairs]  # (N, P) distinct keys
    values = rng.integers(0, values_total, size=(count, pairs))  # (N, P)
    inputs = np.full((count, n), FILLER, dtype=np.int32)
    targets = np.full((count, n), IGNORE_INDEX, dtype=np.int64)
    if single:
        inputs[:, :pairs] = FIRST_ID + keys * values_total + values
        query_ids = FIRST_ID + keys_total * values_total + keys
        slots = n - context
    else:
        inputs[:, 0:context:2] = FIRST_ID + keys
        inputs[:, 1:context:2] = FIRST_ID + keys_total + values
        query_ids = FIRST_ID + keys
        slots = (n - context) // 2  # a query is followed by one filler position
    # Each key is asked once, at distinct random query slots after the context.
    slot = np.argsort(rng.random((count, slots)), axis=1)[:, :pairs]  # (N, P)
    positions = context + (slot if single else 2 * slot)
    rows = np.arange(count)[:, None]
    inputs[rows, positions] = query_ids
    targets[rows, positions] = values
    return Split(inputs, targets)


def context_values(split: Split, params: dict[str, Any]) -> np.ndarray:
    """(N, num_pairs) value index of each context pair, read back from the tokens."""
    pairs, keys_total, values_total = params["num_pairs"], params["num_keys"], params["num_values"]
    if params["layout"] == "single":
        return (np.asarray(split.inputs[:, :pairs]) - FIRST_ID) % values_total
    return np.asarray(split.inputs[:, 1:context_length(params):2]) - FIRST_ID - keys_total


def context_frequency_accuracy(split: Split, params: dict[str, Any]) -> float:
    """Expected accuracy of answering every query with the value most frequent in its sequence's
    context, ties broken uniformly at random: what a model scores that never looks at the query.
    Values repeat within a context (drawn with replacement), so this is above chance."""
    values = context_values(split, params)
    counts = np.stack([(values == v).sum(axis=1) for v in range(params["num_values"])], axis=1)  # (N, V)
    most = counts == counts.max(axis=1, keepdims=True)
    rows, cols = np.nonzero(np.asarray(split.targets) != IGNORE_INDEX)
    targets = np.asarray(split.targets)[rows, cols]
    return float((most[rows, targets] / most[rows].sum(axis=1)).mean()) if rows.size else 0.0


@dataclass(frozen=True)
class MqarLoader(Loader):
    offline: bool = True

    def validate(self, task: Task, params: dict[str, Any]) -> None:
        if params["layout"] not in ("single", "classic"):
            raise BenchError(f"task '{task.name}' param 'layout': expected 'single' or 'classic', got {params['layout']!r}")
        if params["num_pairs"] < 1 or params["num_pairs"] > params["num_keys"]:
            raise BenchError(f"task '{task.name}': need 1 <= num_pairs <= num_keys")
        slots = params["seq_len"] - context_length(params)
        needed = params["num_pairs"] * (1 if params["layout"] == "single" else 2)
        if slots < needed:
            raise BenchError(
                f"task '{task.name}': seq_len={params['seq_len']} too short for {params['num_pairs']} pairs "
                f"and their queries (need at least {context_length(params) + needed})"
            )
        if params["num_values"] < 2 or params["num_examples"] < 3:
            raise BenchError(f"task '{task.name}': need num_values >= 2 and num_examples >= 3")

    def shape(self, task: Task, params: dict[str, Any]) -> dict[str, int]:
        return {"max_seq_len": params["seq_len"], "vocab_size": vocab_size(params), "num_classes": params["num_values"]}

    def source(self, task: Task, data_dir: Path, params: dict[str, Any]) -> Source:
        return Source("generated", None)  # generated in memory by `build`, nothing on disk

    def shortcut_baselines(self, split: Split, params: dict[str, Any]) -> dict[str, float]:
        return {"context_frequency": context_frequency_accuracy(split, params)}

    def build(self, task: Task, data_dir: Path, params: dict[str, Any]) -> Built:
        total = params["num_examples"]
        held_out = max(1, total // 10)
        sizes = {"train": total - 2 * held_out, "val": held_out, "test": held_out}
        # Independent seeded streams per split: train never shares a sequence-generating state with eval.
        return Built({name: generate(params, size, params["seed"] * 3 + i) for i, (name, size) in enumerate(sizes.items())})
