"""Display tables (strings) from the cell frames of `cells.py`: pure pandas, no models, no methods.

Conventions (LRA's tables): accuracy in percent, mean ± 95% t interval over seeds; a (method,
task) cell shows a number only when every run of it is ok, otherwise the failure (FAIL, OOM,
TIMEOUT, DIVERGED, UNSUPPORTED); a failure is never averaged in as 0. The Avg column averages each
method's task means over the tasks where every run of every method is ok, so every Avg in the
column covers the same tasks. Marks: ↑/↓ significantly above/below exact attention (stats.py),
"≤ majority k/n" and "≤ shortcut k/n" when k of the n seeds are at or below the majority-class or the
task's shortcut baseline (counted seed by seed), † still learning at the end.
"""

from __future__ import annotations

import math
from typing import Any, Optional

import pandas as pd

from harness.report.cells import average_tasks, comparisons
from harness.report.stats import ALPHA, RankingStability

MISSING = "—"
MARKS = {
    False: {"pm": " ± ", "up": " ↑", "down": " ↓", "at": " ≤ ", "learning": " †"},
    True: {"pm": " $\\pm$ ", "up": " $\\uparrow$", "down": " $\\downarrow$", "at": " $\\leq$ ",
           "learning": " $^\\dagger$"},
}


def common_n(cells: pd.DataFrame) -> Optional[int]:
    """The number of seeds every ok cell has, or None when they differ (then cells show their n)."""
    counts = set(cells.loc[cells["label"] == "ok", "n"])
    return counts.pop() if len(counts) == 1 else None


def accuracy_table(cells: pd.DataFrame, baselines: pd.DataFrame, significance: pd.DataFrame,
                   latex: bool = False) -> pd.DataFrame:
    """Wide method x task table of display strings, the Avg column, a `majority` row and, where a task
    has one, a `shortcut` row."""
    tasks = list(dict.fromkeys(cells["task"]))
    avg_tasks = average_tasks(cells)
    avg_column = f"Avg ({len(avg_tasks)})"
    n = common_n(cells)
    direction = {(r.method, r.task): ("up" if r.difference > 0 else "down")
                 for r in significance.itertuples() if r.significant}
    table = {}
    for method, group in cells.groupby("method", sort=False):
        by_task = group.set_index("task")
        row = {task: _accuracy_cell(by_task.loc[task], n, direction.get((method, task)), latex)
               if task in by_task.index else MISSING for task in tasks}
        if avg_tasks:
            complete = (by_task.reindex(avg_tasks)["label"] == "ok").all()
            row[avg_column] = f"{by_task.loc[avg_tasks, 'test_accuracy_mean'].mean():.2f}" if complete else MISSING
        table[method] = row
    majority = baselines.set_index("task")["majority"]
    known = [majority.get(t) for t in avg_tasks]
    table["majority"] = {task: _number(majority.get(task)) for task in tasks}
    if avg_tasks:
        table["majority"][avg_column] = _number(sum(known) / len(known)) if None not in known else MISSING
    shortcut = baselines.set_index("task")["shortcut"]
    if shortcut.notna().any():
        table["shortcut"] = {task: _number(shortcut.get(task)) for task in tasks}
        if avg_tasks:
            table["shortcut"][avg_column] = MISSING  # not every task has a shortcut rule
    frame = pd.DataFrame.from_dict(table, orient="index")
    frame.index.name = "method"
    return frame


def _accuracy_cell(cell: pd.Series, n: Optional[int], direction: Optional[str], latex: bool) -> str:
    if cell["label"] != "ok":
        return cell["label"]
    marks = MARKS[latex]
    text = f"{cell['test_accuracy_mean']:.2f}"
    if cell["test_accuracy_ci95"] is not None:
        text += f"{marks['pm']}{cell['test_accuracy_ci95']:.2f}"
    if cell["n"] != n:
        text += f" (n={cell['n']})"
    if direction:
        text += marks[direction]
    for baseline in ("majority", "shortcut"):
        count = cell[f"seeds_at_{baseline}"]
        if count:
            text += f"{marks['at']}{baseline} {int(count)}/{int(cell['n'])}"
    if cell["still_learning_runs"]:
        text += marks["learning"]
    return text


def accuracy_notes(cells: pd.DataFrame, baselines: pd.DataFrame, significance: pd.DataFrame) -> str:
    """The caption: what the numbers and marks mean, and what the records do not say."""
    n = common_n(cells)
    notes = [f"Test accuracy (%): mean ± 95% Student-t interval over seeds ({f'n = {n} seeds per cell' if n else 'n per cell shown'})."]
    if not significance.empty:
        tests = " or ".join(sorted(set(significance["test"])))
        reference = significance["reference"].iloc[0]
        notes.append(f"↑/↓: differs from exact attention (`{reference}`) on that task ({tests}-test by seed, two-sided, "
                     f"alpha {ALPHA}, not corrected for multiple comparisons).")
    elif not cells["method"].isin(["full", "sdpa"]).any():
        notes.append("No `full` or `sdpa` runs here, so no cell is tested against exact attention.")
    notes.append("≤ majority k/n: k of the cell's n seeds score at or below the majority-class baseline (the "
                 "`majority` row, mean over the task's records): those seeds learned nothing we can tell.")
    if baselines["shortcut"].notna().any():
        notes.append("≤ shortcut k/n: k of n seeds score at or below the task's shortcut rule (the `shortcut` row; "
                     "recall: answer every query with the most frequent value in its context), so those seeds "
                     "need not have recalled anything.")
    lacking = baselines.loc[baselines["records_without_majority"] > 0]
    if len(lacking):
        notes.append("The majority baseline is missing from the records of " + ", ".join(
            f"{r.task} ({r.records_without_majority} records)" for r in lacking.itertuples())
            + " (recorded since metrics.baselines): those cells cannot be checked against it.")
    known = cells.loc[cells["label"] == "ok", "still_learning_known"].sum()
    ok_runs = cells.loc[cells["label"] == "ok", "ok_runs"].sum()
    if known:
        notes.append("†: validation accuracy still rising at the end of training on at least one seed "
                     "(metrics.still_learning).")
    if known < ok_runs:
        notes.append(f"Still-learning flag missing from {ok_runs - known} of {ok_runs} ok runs.")
    return " ".join(notes)


def significance_table(significance: pd.DataFrame) -> pd.DataFrame:
    frame = pd.DataFrame({
        "task": significance["task"], "method": significance["method"],
        "vs": significance["reference"], "test": significance["test"], "n": significance["n"],
        "difference (points)": significance["difference"].map(lambda v: f"{v:+.2f}"),
        "95% interval": [f"[{d - h:+.2f}, {d + h:+.2f}]" for d, h in
                         zip(significance["difference"], significance["difference_ci95"])],
        "t": significance["statistic"].map(lambda v: f"{v:.2f}"),
        "df": significance["df"].map(lambda v: f"{v:.1f}"),
        "p": significance["p_value"].map(lambda v: f"{v:.3g}"),
        f"p < {ALPHA}": significance["significant"].map(lambda v: "yes" if v else "no"),
    })
    return frame.reset_index(drop=True)


def ranking_lines(rankings: dict[str, Optional[RankingStability]]) -> list[str]:
    lines = []
    for task, ranking in rankings.items():
        if ranking is None:
            lines.append(f"{task}: fewer than two methods with two shared ok seeds, no ranking to check.")
            continue
        verdict = "stable" if ranking.stable else "not stable"
        best = ", ".join(f"seed {s}: {m}" for s, m in ranking.best_by_seed.items())
        lines.append(f"{task}: ranking {verdict} across seeds {', '.join(map(str, ranking.seeds))} "
                     f"({ranking.consistent_pairs} of {ranking.pairs} method pairs ordered the same on every seed); "
                     f"by mean {' > '.join(ranking.order)}; best per seed: {best}.")
    return lines


def macs_table(cells: pd.DataFrame) -> pd.DataFrame:
    """Wide method x task table of executed attention-core MACs per example (forward), mean ± std over seeds."""
    tasks = list(dict.fromkeys(cells["task"]))
    table = {}
    for method, group in cells.groupby("method", sort=False):
        by_task = group.set_index("task")
        table[method] = {t: _macs_cell(by_task.loc[t]) if t in by_task.index else MISSING for t in tasks}
    frame = pd.DataFrame.from_dict(table, orient="index").reindex(columns=tasks)
    frame.index.name = "method"
    return frame


def _macs_cell(cell: pd.Series) -> str:
    text = format_count(cell["attention_core_macs"])
    if cell["attention_core_macs_std"] is not None:
        text += f" ± {format_count(cell['attention_core_macs_std'])}"
    return text


def macs_detail_table(cells: pd.DataFrame) -> Optional[pd.DataFrame]:
    """Per (method, task): executed mean, its range over the test split, the algorithmic count
    on the learned tree and the balanced-tree formula; None when the records hold none of them."""
    detail = ("attention_core_macs_min", "attention_algorithmic_macs", "attention_balanced_macs")
    if all(cells[c].isna().all() for c in detail):
        return None
    frame = pd.DataFrame({
        "method": cells["method"], "task": cells["task"],
        "executed (mean ± std over seeds)": [_macs_cell(c) for _, c in cells.iterrows()],
        "over the test split (min–max)": [
            f"{format_count(lo)}–{format_count(hi)}" if lo is not None and hi is not None and lo != hi
            else ("same for every example" if lo is not None else MISSING)
            for lo, hi in zip(cells["attention_core_macs_min"], cells["attention_core_macs_max"])],
        "algorithmic (learned tree)": cells["attention_algorithmic_macs"].map(format_count),
        "balanced-tree formula": cells["attention_balanced_macs"].map(format_count),
    })
    return frame.reset_index(drop=True)


def matched_table(cells: pd.DataFrame, runs: pd.DataFrame) -> Optional[pd.DataFrame]:
    """Accuracy at matched attention MACs: the `matched` suite's cells beside their reference's, with
    each one's difference to the reference, paired by seed, and its 95% interval."""
    matched = cells[cells["match_reference"].notna()]
    if matched.empty:
        return None
    differences = {(row.task, row.method, row.reference): row
                   for reference in dict.fromkeys(matched["match_reference"])
                   for row in comparisons(runs, cells, reference).itertuples()}
    rows = []
    for task in dict.fromkeys(matched["task"]):
        on_task = cells[cells["task"] == task].set_index("method")
        for reference in dict.fromkeys(matched.loc[matched["task"] == task, "match_reference"]):
            ref = on_task.loc[reference] if reference in on_task.index else None
            ref_macs = ref["attention_core_macs"] if ref is not None else None
            group = matched[(matched["task"] == task) & (matched["match_reference"] == reference)]
            if ref is not None:
                rows.append(_matched_row(task, f"{reference} (reference)", ref, ref_macs, None))
            else:
                rows.append({"task": task, "method": f"{reference} (reference)",
                             "accuracy (%, ± 95% CI)": "not in this directory", "n": MISSING,
                             "attention-core MACs": MISSING, "MACs / reference": MISSING, "MACs / target": MISSING,
                             "difference to reference [95% CI]": MISSING})
            for _, cell in group.iterrows():
                difference = _difference(differences.get((task, cell["method"], reference)))
                rows.append(_matched_row(task, cell["method"], cell, ref_macs, cell["match_target_macs"], difference))
    return pd.DataFrame(rows)


def _matched_row(task: str, label: str, cell: pd.Series, ref_macs: Optional[float], target: Optional[float],
                 difference: str = MISSING) -> dict:
    accuracy = cell["label"] if cell["label"] != "ok" else _accuracy_cell(cell, cell["n"], None, False)
    macs = cell["attention_core_macs"]
    ratio = lambda a, b: f"{a / b:.2f}" if a is not None and b else MISSING  # noqa: E731
    return {"task": task, "method": label, "accuracy (%, ± 95% CI)": accuracy, "n": cell["n"] or MISSING,
            "attention-core MACs": format_count(macs), "MACs / reference": ratio(macs, ref_macs),
            "MACs / target": ratio(macs, target), "difference to reference [95% CI]": difference}


def _difference(comparison: Any) -> str:
    """'-0.50 [-1.94, +0.94] (paired t)': a comparisons() row as a cell; MISSING without one."""
    if comparison is None:
        return MISSING
    low, high = comparison.difference - comparison.difference_ci95, comparison.difference + comparison.difference_ci95
    return f"{comparison.difference:+.2f} [{low:+.2f}, {high:+.2f}] ({comparison.test})"


def cost_table(cells: pd.DataFrame) -> pd.DataFrame:
    """Training cost per (method, task): seconds, steps/s, examples/s, tokens/s, peak memory."""
    frame = cells[["method", "task", "ok_runs", "runs", "train_seconds_mean", "steps_per_second_mean",
                   "examples_per_second_mean", "tokens_per_second_mean", "peak_memory_mb_max"]].copy()
    frame.columns = ["method", "task", "ok runs", "runs", "train s (mean)", "steps/s", "examples/s", "tokens/s",
                     "peak MiB"]
    numbers = frame.columns[4:]
    frame[numbers] = frame[numbers].map(
        lambda v: MISSING if v is None or pd.isna(v) else f"{v:,.0f}" if v >= 1000 else f"{v:.3g}")
    return frame


def format_count(value: Optional[float]) -> str:
    """1234567 -> '1.23 M': MAC counts in engineering notation."""
    if value is None or pd.isna(value):
        return MISSING
    for scale, suffix in ((1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(value) >= scale:
            return f"{value / scale:.3g} {suffix}"
    return f"{value:.0f}"


def _number(value: Any) -> str:
    return MISSING if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:.2f}"


def latex_escape(text: Any) -> str:
    return "".join("\\" + c if c in "&%$#_{}" else c for c in str(text))
