"""Which records a report may count: each says what its path says, and no run is counted twice.

A record's place (`records/<task>/<method>/seed<N>.json`) names the run; a copy of a record under
another seed or method name would otherwise count as an independent run and shrink the interval.
A record is left out, by name, when:

- its task, method or seed differs from its path, or from its own resolved config;
- its config hash is not the hash of its config (the config was edited after the run);
- it is the same run as an earlier record: the same config hash, or the same measured training
  (history and training time: two real runs never time identically).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Optional

from harness.sweep.records import hash_matches_config

IDENTITY_FIELDS = ("task", "method", "seed")


def mismatch(path: Path, record: dict[str, Any]) -> Optional[str]:
    """Why `record` is not the run its path and config name, or None when all agree."""
    from_path = {"task": path.parent.parent.name, "method": path.parent.name, "seed": path.stem.removeprefix("seed")}
    for key in IDENTITY_FIELDS:
        if str(record[key]) != from_path[key]:
            return f"its {key} is {record[key]!r} but its path says {from_path[key]!r}"
    config = record["config"]
    if "version" not in config:  # not a resolved config (hand-made records): nothing more to compare
        return None
    for key in IDENTITY_FIELDS:
        if key in config and config[key] != record[key]:
            return f"its {key} is {record[key]!r} but its config says {config[key]!r}"
    if not hash_matches_config(record):
        return f"its config_hash {record['config_hash']} is not the hash of its config"
    return None


def run_keys(record: dict[str, Any]) -> list[tuple[str, str]]:
    """(what, value) pairs under which two records are the same run."""
    keys = []
    if "version" in record["config"]:
        keys.append(("config hash", record["config_hash"]))
    metrics = record["metrics"]
    if metrics.get("history") and metrics.get("train_seconds") is not None:
        keys.append(("measured training", json.dumps([metrics["history"], metrics["train_seconds"]],
                                                     sort_keys=True, default=str)))
    return keys


def distinct_runs(found: list[tuple[Path, dict[str, Any]]]) -> tuple[list[dict[str, Any]], list[str]]:
    """The records to count, and one 'left out: ...' line for each record that is not."""
    kept: list[dict[str, Any]] = []
    problems: list[str] = []
    seen: dict[tuple[str, str], Path] = {}
    for path, record in found:
        reason = mismatch(path, record)
        shared = [key for key in run_keys(record) if key in seen]
        if reason is None and shared:
            reason = f"the same run as {seen[shared[0]]} (same {shared[0][0]}); counted once"
        if reason is not None:
            problems.append(f"left out: {path}: {reason}")
            continue
        kept.append(record)
        for key in run_keys(record):
            seen.setdefault(key, path)
    return kept, problems
