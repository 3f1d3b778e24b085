"""Report plots (seaborn, headless): accuracy vs MACs, time/memory vs length, training curves.

Each function returns the written PNG path, or None when it has nothing to draw, so the index
shows what exists and the report never fails for a missing piece.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Optional

os.environ.setdefault("MPLBACKEND", "Agg")

import matplotlib  # noqa: E402

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402
import seaborn as sns  # noqa: E402


def pareto_front(points: pd.DataFrame, x: str, y: str) -> pd.DataFrame:
    """Points no other point beats on both counts (fewer or equal x and higher y), by x."""
    front, best = [], float("-inf")
    for _, row in points.sort_values([x, y], ascending=[True, False]).iterrows():
        if row[y] > best:
            front.append(row)
            best = row[y]
    return pd.DataFrame(front)


def accuracy_vs_macs(cells: pd.DataFrame, path: Path) -> Optional[Path]:
    """One panel per task: test accuracy (mean ± std, %) against attention-core MACs, log x."""
    ok = cells[(cells["label"] == "ok") & cells["attention_core_macs"].notna() & (cells["attention_core_macs"] > 0)]
    if ok.empty:
        return None
    tasks = list(dict.fromkeys(ok["task"]))
    columns = min(3, len(tasks))
    rows = -(-len(tasks) // columns)
    figure, axes = plt.subplots(rows, columns, figsize=(5 * columns, 4 * rows), squeeze=False)
    palette = dict(zip(dict.fromkeys(cells["method"]), sns.color_palette("tab10", cells["method"].nunique())))
    for axis, task in zip(axes.flat, tasks):
        points = ok[ok["task"] == task]
        sns.scatterplot(data=points, x="attention_core_macs", y="test_accuracy_mean", hue="method",
                        palette=palette, s=70, ax=axis, legend=False)
        axis.errorbar(points["attention_core_macs"], points["test_accuracy_mean"],
                      yerr=points["test_accuracy_std"].fillna(0), fmt="none", ecolor="grey", alpha=0.6)
        for _, point in points.iterrows():
            axis.annotate(point["method"], (point["attention_core_macs"], point["test_accuracy_mean"]),
                          textcoords="offset points", xytext=(4, 4), fontsize=8)
        front = pareto_front(points, "attention_core_macs", "test_accuracy_mean")
        axis.step(front["attention_core_macs"], front["test_accuracy_mean"], where="post",
                  color="black", linestyle="--", linewidth=1, label="Pareto frontier")
        axis.set_xscale("log")
        axis.set_title(task)
        axis.set_xlabel("attention-core MACs per example (forward)")
        axis.set_ylabel("test accuracy (%)")
        axis.legend(loc="lower right", fontsize=8)
    for axis in list(axes.flat)[len(tasks):]:
        axis.set_visible(False)
    return _save(figure, path)


def efficiency_curves(frame: pd.DataFrame, column: str, label: str, path: Path) -> Optional[Path]:
    """Log-log `column` against sequence length, one panel per (scope, pass), a line per method."""
    ok = frame[(frame["status"] == "ok") & frame[column].notna()].copy()
    ok = ok[ok[column] > 0]
    if ok.empty:
        return None
    ok["panel"] = ok["scope"] + " " + ok["pass"]
    grid = sns.relplot(data=ok, x="seq_len", y=column, hue="method", col="panel", col_wrap=2, kind="line",
                       marker="o", height=3.5, aspect=1.3, facet_kws={"sharey": False})
    for axis in grid.axes.flat:
        axis.set_xscale("log", base=2)  # lengths double
        axis.set_yscale("log")
    grid.set_axis_labels("sequence length", label)
    grid.set_titles("{col_name}")
    return _save(grid.figure, path)


def training_curves(records: list[dict], path: Path) -> Optional[Path]:
    """Validation accuracy against step from each run's history; mean and sd band over seeds."""
    rows = [
        {"task": r["task"], "method": r["method"], "seed": r.get("seed"), "step": h["step"],
         "val_accuracy": 100 * h["val_accuracy"]}
        for r in records
        for h in ((r.get("metrics") or {}).get("history") or [])
        if h.get("val_accuracy") is not None and h.get("step") is not None
    ]
    if not rows:
        return None
    history = pd.DataFrame(rows)
    grid = sns.relplot(data=history, x="step", y="val_accuracy", hue="method", col="task",
                       col_wrap=min(3, history["task"].nunique()), kind="line", errorbar="sd",
                       height=3.5, aspect=1.2, facet_kws={"sharex": False, "sharey": False})
    grid.set_axis_labels("training step", "validation accuracy (%)")
    grid.set_titles("{col_name}")
    return _save(grid.figure, path)


def _save(figure, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(figure)
    return path
