"""Efficiency rows (efficiency.json) to tables: time with paired ratios and their intervals, memory.

Numbers carry 2 significant digits: the repetitions on a shared machine do not support more.
Rows timed with a given tree (`tree`: "random" or "balanced") are labelled with it. Older rows
without `ratio_to_full` get it as their ratio_to_sdpa over full's in the same cell (no interval).
"""

from __future__ import annotations

import math
from typing import Any

import pandas as pd

from harness.report.cells import STATUS_LABELS
from harness.report.tables import MISSING, format_count

ROW_COLUMNS = ("method", "seq_len", "scope", "pass", "status", "time_ms", "ratio_to_sdpa", "ratio_to_sdpa_ci95",
               "ratio_to_full", "ratio_to_full_ci95", "peak_memory_mb", "macs", "reps", "time_capped", "tree",
               "reason")


def efficiency_frame(rows: list[dict]) -> pd.DataFrame:
    """The rows with every known column, a display `label` (method, tree) and ratio_to_full filled in."""
    frame = pd.DataFrame(rows)
    for column in ROW_COLUMNS:
        if column not in frame:
            frame[column] = None
    frame = frame.astype(object).where(frame.notna(), None)
    frame["label"] = [f"{m} ({t} tree)" if t else m for m, t in zip(frame["method"], frame["tree"])]
    key = ["seq_len", "scope", "pass"]
    full = frame[(frame["label"] == "full") & (frame["status"] == "ok")][key + ["ratio_to_sdpa"]]
    frame = frame.merge(full.rename(columns={"ratio_to_sdpa": "_full_ratio"}), on=key, how="left")
    frame["ratio_to_full"] = [
        given if _number(given) else (r / f if _number(r) and _number(f) and f > 0 else None)
        for given, r, f in zip(frame["ratio_to_full"], frame["ratio_to_sdpa"], frame["_full_ratio"])
    ]
    return frame.drop(columns="_full_ratio")


def efficiency_tables(frame: pd.DataFrame) -> dict[str, pd.DataFrame]:
    """Per (scope, pass): wide label x length tables of time with ratios, and of memory."""
    tables = {}
    for (scope, pass_), group in frame.groupby(["scope", "pass"], sort=False):
        tables[f"{scope} {pass_}: time ms (x sdpa [95% CI], x full [95% CI])"] = _wide(group, time_cell)
        tables[f"{scope} {pass_}: peak memory MiB"] = _wide(group, lambda r: sig2(r["peak_memory_mb"]))
        tables[f"{scope} {pass_}: executed MACs (x full)"] = _wide(group, lambda r: macs_cell(r, group))
    return tables


def macs_cell(row: pd.Series, group: pd.DataFrame) -> str:
    """'340 M (0.039x)': what the timed call executed, and its ratio to full's executed MACs at
    that length (the same count for sdpa where full was not run)."""
    if not _number(row.get("macs")):
        return MISSING
    exact = group[(group["seq_len"] == row["seq_len"]) & group["method"].isin(["full", "sdpa"])
                  & (group["status"] == "ok")]["macs"]
    exact = [float(v) for v in exact if _number(v)]
    ratio = f" ({sig2(float(row['macs']) / exact[0])}x)" if exact and exact[0] > 0 else ""
    return f"{format_count(float(row['macs']))}{ratio}"


def _wide(group: pd.DataFrame, render) -> pd.DataFrame:
    cells: dict[str, dict[int, str]] = {}
    for _, row in group.iterrows():
        text = render(row) if row["status"] == "ok" else STATUS_LABELS.get(row["status"], str(row["status"]).upper())
        cells.setdefault(row["label"], {})[int(row["seq_len"])] = text
    frame = pd.DataFrame.from_dict(cells, orient="index")
    frame = frame.reindex(columns=sorted(frame.columns))
    frame.index.name = "method"
    return frame.fillna(MISSING)


def time_cell(row: pd.Series) -> str:
    """'4.6 (1.0x [0.97, 1.1], 0.98x)': time, then each ratio with its interval where measured."""
    ratios = []
    for column in ("ratio_to_sdpa", "ratio_to_full"):
        text = f"{sig2(row[column])}x" if _number(row[column]) else MISSING
        interval = row.get(f"{column}_ci95")
        if _number(row[column]) and isinstance(interval, (list, tuple)) and len(interval) == 2 \
                and all(_number(v) for v in interval):
            text += f" [{sig2(interval[0])}, {sig2(interval[1])}]"
        ratios.append(text)
    capped = " capped" if row.get("time_capped") else ""
    return f"{sig2(row['time_ms'])} ({', '.join(ratios)}){capped}"


def sig2(value: Any) -> str:
    """Two significant digits, trailing zeros kept: 0.5 -> '0.50', 1 -> '1.0', 5408 -> '5400'."""
    if not _number(value):
        return MISSING
    value = float(value)
    if value == 0:
        return "0.0"
    digits = 1 - math.floor(math.log10(abs(value)))
    rounded = round(value, digits)
    if rounded != 0 and math.floor(math.log10(abs(rounded))) > math.floor(math.log10(abs(value))):
        digits -= 1  # 9.96 rounds to 10: two digits are '10', not '10.0'
        rounded = round(value, digits)
    return f"{rounded:.{max(digits, 0)}f}"


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and not math.isnan(value)


def skipped_lines(frame: pd.DataFrame) -> list[str]:
    skipped = frame[frame["status"] != "ok"]
    return [f"{r['label']} {r['scope']} {r['pass']} n={r['seq_len']}: {str(r['status']).upper()} ({r['reason']})"
            for _, r in skipped.iterrows()]
