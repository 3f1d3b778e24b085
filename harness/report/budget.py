"""The "same budget" rule (docs/evaluation_protocol.md) checked on a results directory.

Within a task every run must train with the same budget, so that only the attention core
differs. The keys that define a budget, read from each record's resolved `config`:

- training: train.steps, batch_size, lr, schedule, warmup_steps, weight_decay, grad_clip,
  betas, eps, eval_every, eval_batches, early_stop_patience;
- model shape: model.num_layers, emb_dim, qkv_dim, mlp_dim, num_heads, max_seq_len, dropout,
  positions, pooling, head, vocab_size, num_classes;
- data: the whole `data` section (examples, lengths, split seed), task_version and the config family.

Not budget: the attention method and its options, the Treeformer bootstrap schedule (a method
choice the ablations vary), the device, time limits and runtime paths.
"""

from __future__ import annotations

import json
from typing import Any

TRAIN_KEYS = ("steps", "batch_size", "lr", "schedule", "warmup_steps", "weight_decay", "grad_clip", "betas",
              "eps", "eval_every", "eval_batches", "early_stop_patience")
MODEL_KEYS = ("num_layers", "emb_dim", "qkv_dim", "mlp_dim", "num_heads", "max_seq_len", "dropout", "positions",
              "pooling", "head", "vocab_size", "num_classes")
BUDGET_KEYS = (("family", "task_version", "data") + tuple(f"train.{k}" for k in TRAIN_KEYS)
               + tuple(f"model.{k}" for k in MODEL_KEYS))
_ABSENT = "<absent>"


def budget_value(config: dict[str, Any], key: str) -> Any:
    value: Any = config
    for part in key.split("."):
        if not isinstance(value, dict) or part not in value:
            return _ABSENT
        value = value[part]
    return value


def budget_conflicts(records: list[dict]) -> list[str]:
    """One line per (task, key) whose value differs between the task's runs, naming who has which."""
    by_task: dict[str, list[dict]] = {}
    for record in records:
        by_task.setdefault(str(record.get("task")), []).append(record)
    lines = []
    for task, group in by_task.items():
        for key in BUDGET_KEYS:
            holders: dict[str, list[str]] = {}
            for record in group:
                value = json.dumps(budget_value(record.get("config") or {}, key), sort_keys=True)
                holders.setdefault(value, []).append(f"{record.get('method')}/seed{record.get('seed')}")
            if len(holders) > 1:
                lines.append(f"{task}: {key} differs between runs: " + "; ".join(
                    f"{_short(value)} ({_names(runs)})" for value, runs in holders.items()))
    return lines


def _short(value: str, limit: int = 60) -> str:
    return value if len(value) <= limit else value[: limit - 1] + "…"


def _names(runs: list[str], limit: int = 4) -> str:
    return ", ".join(runs[:limit]) + (f" and {len(runs) - limit} more" if len(runs) > limit else "")
