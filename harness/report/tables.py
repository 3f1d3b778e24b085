"""Report tables from run records and efficiency rows: pure pandas, no models, no methods.

Conventions (LRA's tables): accuracy in percent, mean ± sample std over seeds; a (method, task)
cell shows a number only when every run of it is ok, otherwise the failure (FAIL, OOM, TIMEOUT,
DIVERGED, UNSUPPORTED); a failure is never averaged in as 0. The Avg column averages each
method's task means over the tasks where every run of every method is ok (methods with no ok
cell at all, e.g. a CUDA-only method on a CPU run, do not shrink that set), so every Avg in the
column covers the same tasks.
"""

from __future__ import annotations

import math
from typing import Any, Optional

import pandas as pd

STATUS_LABELS = {"error": "FAIL", "oom": "OOM", "timeout": "TIMEOUT", "diverged": "DIVERGED",
                 "unsupported": "UNSUPPORTED"}
MISSING = "—"


def runs_frame(records: list[dict]) -> pd.DataFrame:
    """One row per run with the fields the tables and plots use."""
    rows = []
    for record in records:
        metrics, flops = record.get("metrics") or {}, record.get("flops") or {}
        rows.append({
            "method": record["method"], "attention": record.get("attention"), "task": record["task"],
            "seed": record.get("seed"), "status": record["status"], "reason": record.get("reason"),
            "test_accuracy": metrics.get("test_accuracy"), "val_accuracy": metrics.get("val_accuracy"),
            "train_seconds": metrics.get("train_seconds"), "steps_per_second": metrics.get("steps_per_second"),
            "tokens_per_second": metrics.get("tokens_per_second"), "peak_memory_mb": metrics.get("peak_memory_mb"),
            "attention_core_macs": flops.get("attention_core_macs"),
            "attention_layer_macs": flops.get("attention_layer_macs"), "total_macs": flops.get("total_macs"),
            "unsupported_ops": ", ".join(sorted((flops.get("unsupported_ops") or {}))),
        })
    columns = ["method", "attention", "task", "seed", "status", "reason", "test_accuracy", "val_accuracy",
               "train_seconds", "steps_per_second", "tokens_per_second", "peak_memory_mb",
               "attention_core_macs", "attention_layer_macs", "total_macs", "unsupported_ops"]
    return pd.DataFrame(rows, columns=columns)


def cell_summary(runs: pd.DataFrame) -> pd.DataFrame:
    """One row per (method, task): run counts, status label, accuracy mean/std (%), MACs."""
    rows = []
    for (method, task), group in runs.groupby(["method", "task"], sort=False):
        ok = group[group["status"] == "ok"]
        accuracies = ok["test_accuracy"].dropna().astype(float) * 100
        all_ok = len(ok) == len(group) and len(accuracies) == len(group)
        rows.append({
            "method": method, "task": task, "runs": len(group), "ok_runs": len(ok),
            "label": "ok" if all_ok else _failure_label(group),
            "test_accuracy_mean": accuracies.mean() if all_ok else None,
            "test_accuracy_std": accuracies.std(ddof=1) if all_ok and len(accuracies) > 1 else None,
            "val_accuracy_mean": ok["val_accuracy"].dropna().astype(float).mean() * 100 if all_ok else None,
            "attention_core_macs": _first(group["attention_core_macs"]),
            "attention_layer_macs": _first(group["attention_layer_macs"]),
            "total_macs": _first(group["total_macs"]),
            "train_seconds_mean": ok["train_seconds"].dropna().astype(float).mean() if len(ok) else None,
            "steps_per_second_mean": ok["steps_per_second"].dropna().astype(float).mean() if len(ok) else None,
            "tokens_per_second_mean": ok["tokens_per_second"].dropna().astype(float).mean() if len(ok) else None,
            "peak_memory_mb_max": ok["peak_memory_mb"].dropna().astype(float).max() if len(ok) else None,
            "unsupported_ops": ", ".join(sorted({op for ops in group["unsupported_ops"] if ops for op in ops.split(", ")})),
        })
    return pd.DataFrame(rows)


def _failure_label(group: pd.DataFrame) -> str:
    """The most frequent failure of a cell; with some runs ok, how many failed."""
    failed = group[group["status"] != "ok"]
    if failed.empty:  # every run ok but an accuracy is missing: the record is incomplete
        return "FAIL"
    label = STATUS_LABELS.get(failed["status"].mode().iloc[0], "FAIL")
    return label if len(failed) == len(group) else f"{label} ({len(failed)}/{len(group)} runs)"


def _first(values: pd.Series) -> Optional[float]:
    present = values.dropna()
    return float(present.iloc[0]) if len(present) else None


def average_tasks(cells: pd.DataFrame) -> list[str]:
    """Tasks where every run of every method (that has any ok cell) is ok: the Avg column's set."""
    scored = cells[cells["method"].isin(cells.loc[cells["label"] == "ok", "method"])]
    tasks = list(dict.fromkeys(cells["task"]))
    return [t for t in tasks if (scored.loc[scored["task"] == t, "label"] == "ok").all() and t in set(scored["task"])]


def accuracy_table(cells: pd.DataFrame, latex: bool = False) -> pd.DataFrame:
    """Wide method x task table of display strings plus the Avg column."""
    tasks = list(dict.fromkeys(cells["task"]))
    avg_tasks = average_tasks(cells)
    table = {}
    for method, group in cells.groupby("method", sort=False):
        by_task = group.set_index("task")
        row = {}
        for task in tasks:
            row[task] = _accuracy_cell(by_task.loc[task], latex) if task in by_task.index else MISSING
        if avg_tasks and (by_task.reindex(avg_tasks)["label"] == "ok").all():
            row[f"Avg ({len(avg_tasks)})"] = f"{by_task.loc[avg_tasks, 'test_accuracy_mean'].mean():.2f}"
        elif avg_tasks:
            row[f"Avg ({len(avg_tasks)})"] = MISSING
        table[method] = row
    frame = pd.DataFrame.from_dict(table, orient="index")
    frame.index.name = "method"
    return frame


def _accuracy_cell(cell: pd.Series, latex: bool) -> str:
    if cell["label"] != "ok":
        return cell["label"]
    if cell["test_accuracy_std"] is None or pd.isna(cell["test_accuracy_std"]):
        return f"{cell['test_accuracy_mean']:.2f}"
    plus_minus = " $\\pm$ " if latex else " ± "
    return f"{cell['test_accuracy_mean']:.2f}{plus_minus}{cell['test_accuracy_std']:.2f}"


def macs_table(cells: pd.DataFrame) -> pd.DataFrame:
    """Wide method x task table of attention-core MACs per example (forward), human-readable."""
    tasks = list(dict.fromkeys(cells["task"]))
    frame = cells.pivot(index="method", columns="task", values="attention_core_macs").reindex(columns=tasks)
    frame = frame.reindex(list(dict.fromkeys(cells["method"])))
    return frame.map(lambda v: format_count(v) if v is not None and not pd.isna(v) else MISSING)


def cost_table(cells: pd.DataFrame) -> pd.DataFrame:
    """Training cost per (method, task): seconds, steps/s, tokens/s, peak memory."""
    frame = cells[["method", "task", "ok_runs", "runs", "train_seconds_mean", "steps_per_second_mean",
                   "tokens_per_second_mean", "peak_memory_mb_max"]].copy()
    frame.columns = ["method", "task", "ok runs", "runs", "train s (mean)", "steps/s", "tokens/s", "peak MiB"]
    numbers = frame.columns[4:]
    frame[numbers] = frame[numbers].map(lambda v: MISSING if v is None or pd.isna(v) else f"{v:.3g}")
    return frame


def format_count(value: float) -> str:
    """1234567 -> '1.23 M': MAC counts in engineering notation."""
    if value is None or pd.isna(value):
        return MISSING
    for scale, suffix in ((1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(value) >= scale:
            return f"{value / scale:.3g} {suffix}"
    return f"{value:.0f}"


def latex_escape(text: Any) -> str:
    return "".join("\\" + c if c in "&%$#_{}" else c for c in str(text))


# -- efficiency ----------------------------------------------------------------------------------


def efficiency_frame(rows: list[dict]) -> pd.DataFrame:
    """Efficiency rows plus ratio_to_full (ratio_to_sdpa of the method over full's, same cell)."""
    frame = pd.DataFrame(rows)
    for column in ("method", "seq_len", "scope", "pass", "status", "time_ms", "ratio_to_sdpa",
                   "peak_memory_mb", "macs", "reason"):
        if column not in frame:
            frame[column] = None
    key = ["seq_len", "scope", "pass"]
    full = frame[(frame["method"] == "full") & (frame["status"] == "ok")][key + ["ratio_to_sdpa"]]
    frame = frame.merge(full.rename(columns={"ratio_to_sdpa": "_full_ratio"}), on=key, how="left")
    frame["ratio_to_full"] = [
        r / f if _number(r) and _number(f) and f > 0 else None for r, f in zip(frame["ratio_to_sdpa"], frame["_full_ratio"])
    ]
    return frame.drop(columns="_full_ratio")


def _number(value: Any) -> bool:
    return value is not None and not (isinstance(value, float) and math.isnan(value))


def efficiency_tables(frame: pd.DataFrame) -> dict[str, pd.DataFrame]:
    """Per (scope, pass): wide method x length tables of time, ratios and memory."""
    tables = {}
    for (scope, pass_), group in frame.groupby(["scope", "pass"], sort=False):
        tables[f"{scope} {pass_}: time ms (x sdpa, x full)"] = _wide(group, _time_cell)
        tables[f"{scope} {pass_}: peak memory MiB"] = _wide(group, lambda r: f"{r['peak_memory_mb']:.1f}")
    return tables


def _wide(group: pd.DataFrame, render) -> pd.DataFrame:
    cells = {}
    for _, row in group.iterrows():
        text = render(row) if row["status"] == "ok" else STATUS_LABELS.get(row["status"], str(row["status"]).upper())
        cells.setdefault(row["method"], {})[int(row["seq_len"])] = text
    frame = pd.DataFrame.from_dict(cells, orient="index")
    frame = frame.reindex(columns=sorted(frame.columns))
    frame.index.name = "method"
    return frame.fillna(MISSING)


def _time_cell(row: pd.Series) -> str:
    time_ms = row["time_ms"]
    text = f"{time_ms:.0f}" if time_ms >= 100 else f"{time_ms:.1f}" if time_ms >= 10 else f"{time_ms:.3g}"
    ratios = [f"{row[c]:.2f}x" if _number(row[c]) else MISSING for c in ("ratio_to_sdpa", "ratio_to_full")]
    return f"{text} ({', '.join(ratios)})"
