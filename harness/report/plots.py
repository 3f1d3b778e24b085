"""Report plots (matplotlib, headless): accuracy against MACs and against training speed, training
curves, time and memory against length.

Every accuracy plot shows the mean over seeds with its 95% interval and the task's majority-class
baseline; methods are told apart by a figure legend, never by labels written over the points.
Each function returns the written PNG path, or None when it has nothing to draw.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Optional

os.environ.setdefault("MPLBACKEND", "Agg")

import matplotlib  # noqa: E402

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from matplotlib.lines import Line2D  # noqa: E402
from matplotlib.ticker import (EngFormatter, FixedLocator, FuncFormatter, LogLocator, NullFormatter,  # noqa: E402
                               NullLocator, ScalarFormatter)

from harness.report.stats import t_interval  # noqa: E402

MARKERS = "osD^v<>phX*"


def pareto_front(points: pd.DataFrame, x: str, y: str) -> pd.DataFrame:
    """Points no other point beats on both counts (fewer or equal x and higher y), by x."""
    front, best = [], float("-inf")
    for _, row in points.sort_values([x, y], ascending=[True, False]).iterrows():
        if row[y] > best:
            front.append(row)
            best = row[y]
    return pd.DataFrame(front)


def _style(methods) -> dict[str, dict]:
    """Colour and marker by method name in name order, so a method looks the same in every plot."""
    colours = plt.get_cmap("tab10").colors
    return {m: {"color": colours[i % len(colours)], "marker": MARKERS[i % len(MARKERS)]}
            for i, m in enumerate(sorted(set(methods)))}


def _panels(count: int, width: float = 5.0, height: float = 4.0, max_columns: int = 3):
    columns = min(max_columns, count)
    rows = -(-count // columns)
    figure, axes = plt.subplots(rows, columns, figsize=(width * columns, height * rows), squeeze=False)
    for axis in list(axes.flat)[count:]:
        axis.set_visible(False)
    return figure, list(axes.flat)[:count]


def _majority_line(axis, majority: Optional[float]) -> list:
    """Draws the majority-class baseline; returns its legend entry, or none when it is unknown."""
    if majority is None or pd.isna(majority):
        return []
    axis.axhline(majority, color="grey", linestyle=":", linewidth=1.2)
    return [Line2D([], [], color="grey", linestyle=":", label="majority class")]


def _legend(figure, style: dict[str, dict], extra: list = (), lines: bool = False) -> None:
    handles = [Line2D([], [], linestyle="-" if lines else "none", markersize=8, label=m, **s)
               for m, s in style.items()]
    handles += list(extra)
    figure.legend(handles=handles, loc="upper center", bbox_to_anchor=(0.5, 0.0), ncol=min(len(handles), 5),
                  frameon=False, fontsize=9)


def _log_axis(axis, values, which: str = "x", counts: bool = False) -> None:
    """Log scale labelled at 1-2-5 (short ranges), 1-3 or whole decades (long ones) so that labels
    never crowd; counts in engineering notation (20M), times and MiB as plain numbers (0.5, 2000)."""
    getattr(axis, f"set_{which}scale")("log")
    values = [float(v) for v in values if v is not None and float(v) > 0]
    decades = np.log10(max(values) / min(values)) if values else 0.0
    subs = (1.0, 2.0, 5.0) if decades <= 2.5 else (1.0, 3.0) if decades <= 4.5 else (1.0,)
    target = axis.xaxis if which == "x" else axis.yaxis
    target.set_major_locator(LogLocator(base=10, subs=subs))
    target.set_major_formatter(EngFormatter(sep="") if counts else FuncFormatter(lambda v, _: f"{v:g}"))
    target.set_minor_formatter(NullFormatter())


def dodge(xs: list[float], step: float = 1.06) -> list[float]:
    """Points with equal MACs drawn side by side (x·step^k) so that none hides another; the
    caption says so. Order kept."""
    seen: dict[float, int] = {}
    out = []
    for x in xs:
        k = seen.get(x, 0)
        seen[x] = k + 1
        out.append(x * step ** k)
    return out


def accuracy_vs_macs(cells: pd.DataFrame, path: Path) -> Optional[Path]:
    """One panel per task: test accuracy (mean, 95% interval) against attention-core MACs (log x);
    methods with equal MACs are drawn a little apart (`dodge`)."""
    ok = cells[(cells["label"] == "ok") & cells["attention_core_macs"].notna()]
    ok = ok[ok["attention_core_macs"].astype(float) > 0]
    if ok.empty:
        return None
    style = _style(cells["method"])
    tasks = list(dict.fromkeys(ok["task"]))
    figure, axes = _panels(len(tasks))
    baseline: list = []
    for axis, task in zip(axes, tasks):
        points = ok[ok["task"] == task]
        for (_, point), x in zip(points.iterrows(), dodge(list(points["attention_core_macs"].astype(float)))):
            axis.errorbar(x, point["test_accuracy_mean"],
                          yerr=point["test_accuracy_ci95"] or 0, capsize=3, markersize=7, linestyle="none",
                          **style[point["method"]])
        front = pareto_front(points.astype({"attention_core_macs": float, "test_accuracy_mean": float}),
                             "attention_core_macs", "test_accuracy_mean")
        axis.step(front["attention_core_macs"], front["test_accuracy_mean"], where="post", color="black",
                  linestyle="--", linewidth=0.8)
        baseline = _majority_line(axis, points["majority"].iloc[0]) or baseline
        _log_axis(axis, points["attention_core_macs"], "x", counts=True)
        axis.margins(x=0.15)
        axis.set_title(task)
        axis.set_xlabel("attention-core MACs per example (forward)")
        axis.set_ylabel("test accuracy (%)")
    _legend(figure, style, [Line2D([], [], color="black", linestyle="--", label="Pareto frontier")] + baseline)
    return _save(figure, path)


def accuracy_vs_throughput(cells: pd.DataFrame, path: Path) -> Optional[Path]:
    """LRA's Figure 3 view: accuracy against training steps/s, marker area proportional to peak memory."""
    ok = cells[(cells["label"] == "ok") & cells["steps_per_second_mean"].notna()]
    if ok.empty:
        return None
    style = _style(cells["method"])
    memory = ok["peak_memory_mb_max"].dropna().astype(float)
    largest = float(memory.max()) if len(memory) else None
    area = (lambda mb: 40 + 560 * mb / largest) if largest else (lambda mb: 120)
    tasks = list(dict.fromkeys(ok["task"]))
    figure, axes = _panels(len(tasks))
    baseline: list = []
    for axis, task in zip(axes, tasks):
        points = ok[ok["task"] == task]
        for _, point in points.iterrows():
            s = style[point["method"]]
            size = area(float(point["peak_memory_mb_max"])) if point["peak_memory_mb_max"] is not None else 120
            axis.errorbar(point["steps_per_second_mean"], point["test_accuracy_mean"],
                          yerr=point["test_accuracy_ci95"] or 0, color=s["color"], capsize=3, linestyle="none",
                          zorder=1)
            axis.scatter(point["steps_per_second_mean"], point["test_accuracy_mean"], s=size, color=s["color"],
                         marker=s["marker"], alpha=0.55, edgecolor="black", linewidth=0.6, zorder=2)
        baseline = _majority_line(axis, points["majority"].iloc[0]) or baseline
        axis.margins(x=0.2, y=0.15)
        axis.set_title(task)
        axis.set_xlabel("training speed (steps/s)")
        axis.set_ylabel("test accuracy (%)")
    sizes = []
    if largest:
        for mb in (largest / 4, largest):
            sizes.append(Line2D([], [], linestyle="none", marker="o", color="lightgrey", markeredgecolor="black",
                                markersize=np.sqrt(area(mb)), label=f"{mb:.0f} MiB peak"))
    _legend(figure, style, sizes + baseline)
    return _save(figure, path)


def training_curves(runs_history: pd.DataFrame, majority: dict[str, Optional[float]], path: Path) -> Optional[Path]:
    """Validation accuracy against step: mean over seeds with a 95% interval band, one panel per task."""
    if runs_history.empty:
        return None
    style = _style(runs_history["method"])
    tasks = list(dict.fromkeys(runs_history["task"]))
    figure, axes = _panels(len(tasks))
    baseline: list = []
    for axis, task in zip(axes, tasks):
        for method, group in runs_history[runs_history["task"] == task].groupby("method", sort=False):
            steps, means, lows, highs = [], [], [], []
            for step, at_step in group.groupby("step"):
                interval = t_interval(list(at_step["val_accuracy"]))
                steps.append(step)
                means.append(interval.mean)
                lows.append(interval.low)
                highs.append(interval.high)
            colour = style[method]["color"]
            axis.plot(steps, means, color=colour, marker=style[method]["marker"], markersize=4)
            axis.fill_between(steps, lows, highs, color=colour, alpha=0.15, linewidth=0)
        baseline = _majority_line(axis, majority.get(task)) or baseline
        axis.set_title(task)
        axis.set_xlabel("training step")
        axis.set_ylabel("validation accuracy (%)")
    _legend(figure, style, baseline)
    return _save(figure, path)


def history_frame(records: list[dict]) -> pd.DataFrame:
    """Validation accuracy (%) at each evaluation of each run's history."""
    rows = [
        {"task": r["task"], "method": r["method"], "seed": r.get("seed"), "step": h["step"],
         "val_accuracy": 100 * h["val_accuracy"]}
        for r in records
        for h in ((r.get("metrics") or {}).get("history") or [])
        if h.get("val_accuracy") is not None and h.get("step") is not None
    ]
    return pd.DataFrame(rows, columns=["task", "method", "seed", "step", "val_accuracy"])


def efficiency_curves(frame: pd.DataFrame, column: str, label: str, path: Path) -> Optional[Path]:
    """Log-log `column` against sequence length, one panel per (scope, pass), a line per method."""
    ok = frame[(frame["status"] == "ok") & frame[column].notna()].copy()
    ok = ok[ok[column].astype(float) > 0]
    if ok.empty:
        return None
    style = _style(frame["label"])
    panels = list(dict.fromkeys(zip(ok["scope"], ok["pass"])))
    figure, axes = _panels(len(panels), width=5.5, height=4.0, max_columns=2)
    lengths = sorted(set(int(n) for n in ok["seq_len"]))
    for axis, (scope, pass_) in zip(axes, panels):
        for method, group in ok[(ok["scope"] == scope) & (ok["pass"] == pass_)].groupby("label", sort=False):
            group = group.sort_values("seq_len")
            axis.plot(group["seq_len"].astype(int), group[column].astype(float), **style[method], markersize=5)
        axis.set_xscale("log", base=2)  # lengths double
        axis.xaxis.set_major_locator(FixedLocator(lengths))
        axis.xaxis.set_major_formatter(ScalarFormatter())
        axis.xaxis.set_minor_locator(NullLocator())
        axis.tick_params(axis="x", labelrotation=45)
        _log_axis(axis, ok.loc[(ok["scope"] == scope) & (ok["pass"] == pass_), column], "y")
        axis.set_title(f"{scope}, {pass_.replace('_', ' + ')}")
        axis.set_xlabel("sequence length")
        axis.set_ylabel(label)
    style = {m: s for m, s in style.items() if m in set(ok["label"])}
    _legend(figure, style, lines=True)
    return _save(figure, path)


def _save(figure, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.tight_layout()
    figure.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(figure)
    return path
