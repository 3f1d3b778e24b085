"""Run records to tidy frames: one row per run, one per (method, task) cell, one per task.

Fields missing from older records (baselines, still_learning, MACs over the test split) stay
missing (None): the tables then say what is not known instead of inventing it.
"""

from __future__ import annotations

import math
from typing import Any, Optional

import pandas as pd

from harness.report.stats import Comparison, RankingStability, compare, ranking_stability, t_interval
from harness.sweep.records import STATUSES

# How a table shows a run that is not ok: its status in capitals, an error as FAIL.
STATUS_LABELS = {status: "FAIL" if status == "error" else status.upper() for status in STATUSES if status != "ok"}
RUN_COLUMNS = ["method", "attention", "task", "seed", "status", "reason", "test_accuracy", "val_accuracy",
               "majority", "chance", "shortcut", "still_learning", "train_seconds", "steps_per_second", "tokens_per_second",
               "peak_memory_mb", "batch_size", "attention_core_macs", "attention_core_macs_min",
               "attention_core_macs_max", "attention_algorithmic_macs", "attention_balanced_macs",
               "attention_layer_macs", "total_macs", "unsupported_ops", "match_reference", "match_target_macs"]

FLOPS_KEYS = ("attention_core_macs", "attention_core_macs_min", "attention_core_macs_max", "attention_algorithmic_macs",
              "attention_balanced_macs", "attention_layer_macs", "total_macs")


def runs_frame(records: list[dict]) -> pd.DataFrame:
    """One row per run with the fields the tables and plots use (None where a record lacks one)."""
    rows = []
    for record in records:
        metrics, flops = record.get("metrics") or {}, record.get("flops") or {}
        config = record.get("config") or {}
        baselines = metrics.get("baselines") or {}
        match = (config.get("runtime") or {}).get("match_macs") or {}
        rows.append({
            "method": record["method"], "attention": record.get("attention"), "task": record["task"],
            "seed": record.get("seed"), "status": record["status"], "reason": record.get("reason"),
            "test_accuracy": metrics.get("test_accuracy"), "val_accuracy": metrics.get("val_accuracy"),
            "majority": baselines.get("majority"), "chance": baselines.get("chance"),
            "shortcut": baselines.get("context_frequency"),
            "still_learning": metrics.get("still_learning"),
            "train_seconds": metrics.get("train_seconds"), "steps_per_second": metrics.get("steps_per_second"),
            "tokens_per_second": metrics.get("tokens_per_second"), "peak_memory_mb": metrics.get("peak_memory_mb"),
            "batch_size": (config.get("train") or {}).get("batch_size"),
            **{key: flops.get(key) for key in FLOPS_KEYS},
            "unsupported_ops": ", ".join(sorted((flops.get("unsupported_ops") or {}))),
            "match_reference": match.get("reference"), "match_target_macs": match.get("target_macs"),
        })
    return pd.DataFrame(rows, columns=RUN_COLUMNS).astype(object).where(lambda f: f.notna(), None)


def task_baselines(runs: pd.DataFrame) -> pd.DataFrame:
    """Per task: majority, chance and the task's shortcut rule (%, mean over the task's records that
    carry them; the shortcut only for tasks that have one), and how many records lack the majority."""
    rows = []
    for task, group in runs.groupby("task", sort=False):
        majority, chance, shortcut = (_present(group[key]) for key in ("majority", "chance", "shortcut"))
        rows.append({"task": task, "majority": 100 * _mean(majority) if majority else None,
                     "chance": 100 * _mean(chance) if chance else None,
                     "shortcut": 100 * _mean(shortcut) if shortcut else None,
                     "records_without_majority": len(group) - len(majority)})
    return pd.DataFrame(rows, columns=["task", "majority", "chance", "shortcut", "records_without_majority"])


def cell_summary(runs: pd.DataFrame) -> pd.DataFrame:
    """One row per (method, task): status label, accuracy mean and 95% interval (%), baselines, MACs, cost."""
    baselines = task_baselines(runs).set_index("task")
    rows = []
    for (method, task), group in runs.groupby(["method", "task"], sort=False):
        ok = group[group["status"] == "ok"]
        accuracies = [100 * float(v) for v in ok["test_accuracy"] if v is not None]
        all_ok = len(ok) == len(group) and len(accuracies) == len(group)
        interval = t_interval(accuracies) if all_ok else None
        majority, shortcut = baselines.loc[task, "majority"], baselines.loc[task, "shortcut"]
        core = _present(group["attention_core_macs"])
        learning = _present(ok["still_learning"])
        rows.append({
            "method": method, "task": task, "runs": len(group), "ok_runs": len(ok),
            "label": "ok" if all_ok else _failure_label(group),
            "n": interval.n if interval else 0,
            "test_accuracy_mean": interval.mean if interval else None,
            "test_accuracy_ci95": interval.half_width if interval else None,
            "test_accuracy_std": _std(accuracies) if all_ok else None,
            "majority": majority,
            # Seeds at or below a baseline, counted seed by seed: a t interval over a split of solved
            # and unsolved seeds would reach the baseline although most seeds are far above it.
            "seeds_at_majority": _at_or_below(accuracies, majority) if all_ok else None,
            "seeds_at_shortcut": _at_or_below(accuracies, shortcut) if all_ok else None,
            "still_learning_runs": sum(bool(v) for v in learning), "still_learning_known": len(learning),
            "attention_core_macs": _mean(core) if core else None,
            "attention_core_macs_std": _std(core) if len(set(core)) > 1 else None,
            "attention_core_macs_min": _min(group["attention_core_macs_min"]),
            "attention_core_macs_max": _max(group["attention_core_macs_max"]),
            "attention_algorithmic_macs": _mean(_present(group["attention_algorithmic_macs"])),
            "attention_balanced_macs": _mean(_present(group["attention_balanced_macs"])),
            "attention_layer_macs": _mean(_present(group["attention_layer_macs"])),
            "total_macs": _mean(_present(group["total_macs"])),
            "match_reference": next(iter(_present(group["match_reference"])), None),
            "match_target_macs": _mean(_present(group["match_target_macs"])),
            "train_seconds_mean": _mean(_present(ok["train_seconds"])),
            "steps_per_second_mean": _mean(_present(ok["steps_per_second"])),
            "examples_per_second_mean": _mean([s * b for s, b in zip(ok["steps_per_second"], ok["batch_size"])
                                               if s is not None and b is not None]),
            "tokens_per_second_mean": _mean(_present(ok["tokens_per_second"])),
            "peak_memory_mb_max": _max(ok["peak_memory_mb"]),
            "unsupported_ops": ", ".join(sorted({op for ops in group["unsupported_ops"] if ops for op in ops.split(", ")})),
        })
    return pd.DataFrame(rows).astype(object).where(lambda f: f.notna(), None)


def ok_accuracies(runs: pd.DataFrame, cells: pd.DataFrame, task: str) -> dict[str, dict[int, float]]:
    """Test accuracy (%) by seed of each method whose cell on `task` is all ok."""
    ok_methods = set(cells.loc[(cells["task"] == task) & (cells["label"] == "ok"), "method"])
    chosen = runs[(runs["task"] == task) & runs["method"].isin(ok_methods)]
    by_method: dict[str, dict[int, float]] = {}
    for row in chosen.itertuples():
        by_method.setdefault(row.method, {})[int(row.seed)] = 100 * float(row.test_accuracy)
    return by_method


def comparisons(runs: pd.DataFrame, cells: pd.DataFrame, reference: Optional[str] = None) -> pd.DataFrame:
    """Each ok cell against the reference method's ok cell on the same task (stats.compare); the
    reference defaults to the exact attention present (`exact_reference`)."""
    reference = reference or exact_reference(cells)
    rows = []
    for task in dict.fromkeys(cells["task"]):
        accuracy = ok_accuracies(runs, cells, task)
        if reference not in accuracy:
            continue
        for method, by_seed in accuracy.items():
            if method == reference:
                continue
            result: Optional[Comparison] = compare(by_seed, accuracy[reference])
            if result is not None:
                rows.append({"task": task, "method": method, "reference": reference, "test": result.test,
                             "n": result.n, "difference": result.difference,
                             "difference_ci95": result.difference_ci95, "statistic": result.statistic,
                             "df": result.df, "p_value": result.p_value, "significant": result.significant})
    return pd.DataFrame(rows, columns=["task", "method", "reference", "test", "n", "difference", "difference_ci95",
                                       "statistic", "df", "p_value", "significant"])


def rankings(runs: pd.DataFrame, cells: pd.DataFrame) -> dict[str, Optional[RankingStability]]:
    return {task: ranking_stability(ok_accuracies(runs, cells, task)) for task in dict.fromkeys(cells["task"])}


def average_tasks(cells: pd.DataFrame) -> list[str]:
    """Tasks where every run of every method (that has any ok cell) is ok: the Avg column's set."""
    scored = cells[cells["method"].isin(cells.loc[cells["label"] == "ok", "method"])]
    tasks = list(dict.fromkeys(cells["task"]))
    return [t for t in tasks if (scored.loc[scored["task"] == t, "label"] == "ok").all() and t in set(scored["task"])]


def _at_or_below(accuracies: list[float], baseline: Optional[float]) -> Optional[int]:
    """How many of the seeds' accuracies (%) are at or below `baseline` (%); None without a baseline."""
    return None if baseline is None else sum(a <= baseline for a in accuracies)


def exact_reference(cells: pd.DataFrame) -> Optional[str]:
    """The exact attention the others are tested against: `full`, else `sdpa` (the same function)."""
    methods = set(cells["method"])
    return next((name for name in ("full", "sdpa") if name in methods), None)


def _failure_label(group: pd.DataFrame) -> str:
    """The most frequent failure of a cell; with some runs ok, how many failed."""
    failed = group[group["status"] != "ok"]
    if failed.empty:  # every run ok but an accuracy is missing: the record is incomplete
        return "FAIL"
    label = STATUS_LABELS.get(failed["status"].mode().iloc[0], "FAIL")
    return label if len(failed) == len(group) else f"{label} ({len(failed)}/{len(group)} runs)"


def _present(values: pd.Series) -> list[Any]:
    return [v for v in values if v is not None and not (isinstance(v, float) and math.isnan(v))]


def _mean(values: list[float]) -> Optional[float]:
    return math.fsum(float(v) for v in values) / len(values) if values else None


def _std(values: list[float]) -> Optional[float]:
    if len(values) < 2:
        return None
    mean = _mean(values)
    return math.sqrt(math.fsum((float(v) - mean) ** 2 for v in values) / (len(values) - 1))


def _min(values: pd.Series) -> Optional[float]:
    present = _present(values)
    return float(min(present)) if present else None


def _max(values: pd.Series) -> Optional[float]:
    present = _present(values)
    return float(max(present)) if present else None
