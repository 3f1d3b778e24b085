"""Efficiency rows (efficiency.json) to tables: time with paired ratios and their intervals, memory,
executed MACs, and the crossover lengths where one method becomes cheaper than another.

Numbers carry 2 significant digits: the repetitions on a shared machine do not support more.
Rows timed with a given tree (`tree`: "random" or "balanced") are labelled with it. Older rows
without `ratio_to_full` get it as their ratio_to_sdpa over full's in the same cell (no interval).
"""

from __future__ import annotations

import itertools
import json
import math
from typing import Any, Optional

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
    frame["label"] = _distinguished(frame)
    key = ["seq_len", "scope", "pass"]
    full = frame[(frame["label"] == "full") & (frame["status"] == "ok")][key + ["ratio_to_sdpa"]]
    frame = frame.merge(full.rename(columns={"ratio_to_sdpa": "_full_ratio"}), on=key, how="left")
    frame["ratio_to_full"] = [
        given if _number(given) else (r / f if _number(r) and _number(f) and f > 0 else None)
        for given, r, f in zip(frame["ratio_to_full"], frame["ratio_to_sdpa"], frame["_full_ratio"])
    ]
    return frame.drop(columns="_full_ratio")


REQUIRED = {"method": str, "seq_len": int, "scope": str, "pass": str, "status": str}


def row_problem(rows: list[dict]) -> Optional[str]:
    """Why these rows cannot be shown (the first row with a missing or mistyped field), or None."""
    for index, row in enumerate(rows):
        for key, kind in REQUIRED.items():
            value = row.get(key)
            if not isinstance(value, kind) or isinstance(value, bool):
                return f"row {index}: field '{key}' is {value!r}, expected {kind.__name__}"
        if row["status"] == "ok" and not _number(row.get("time_ms")):
            return f"row {index}: an ok row needs a number in 'time_ms', got {row.get('time_ms')!r}"
    return None


def _distinguished(frame: pd.DataFrame) -> list[str]:
    """Labels that tell apart rows of one method with other options or thread counts (a resumed
    sweep may hold both); otherwise the labels as they are."""
    options = [json.dumps(o, sort_keys=True) if isinstance(o, dict) else None for o in frame.get("options", [None] * len(frame))]
    threads = list(frame["threads"]) if "threads" in frame else [None] * len(frame)
    several_threads = len({t for t in threads if t is not None}) > 1
    variants: dict[str, set] = {}
    for label, option in zip(frame["label"], options):
        variants.setdefault(label, set()).add(option)
    labels = []
    for label, option, thread in zip(frame["label"], options, threads):
        if len(variants[label]) > 1 and option:
            label += f" {option}"
        if several_threads and thread is not None:
            label += f" ({thread} threads)"
        labels.append(label)
    return labels


def efficiency_tables(frame: pd.DataFrame) -> dict[str, pd.DataFrame]:
    """Per (scope, pass): wide label x length tables of time with ratios, of memory, of executed
    MACs, and the crossover table of every pair of methods."""
    tables = {}
    for (scope, pass_), group in frame.groupby(["scope", "pass"], sort=False):
        tables[f"{scope} {pass_}: time ms (x sdpa [95% CI], x full [95% CI])"] = _wide(group, time_cell)
        tables[f"{scope} {pass_}: peak memory MiB"] = _wide(group, lambda r: sig2(r["peak_memory_mb"]))
        tables[f"{scope} {pass_}: executed MACs (x full)"] = _wide(group, lambda r: macs_cell(r, group))
        crossovers = crossover_table(group)
        if not crossovers.empty:
            tables[f"{scope} {pass_}: crossover lengths (A cheaper than B from)"] = crossovers
    return tables


def crossover_table(group: pd.DataFrame) -> pd.DataFrame:
    """For each pair of methods A, B measured at two or more common lengths: from which length one
    is cheaper than the other, in time (paired ratios of repetitions in one process; a crossing is
    counted only where the 95% intervals on both sides exclude 1) and in executed MACs (exact
    counts), each with the bracketing lengths and the figures that support it."""
    ok = group[group["status"] == "ok"]
    by_label = {label: rows.drop_duplicates("seq_len").set_index("seq_len") for label, rows in ok.groupby("label", sort=False)}
    lines = []
    for a, b in itertools.combinations(by_label, 2):
        lengths = sorted(set(by_label[a].index) & set(by_label[b].index))
        if len(lengths) < 2:
            continue
        times = [(n, *_time_ratio(by_label[a].loc[n], by_label[b].loc[n])) for n in lengths]
        macs = [(n, float(by_label[a].loc[n, "macs"]) / float(by_label[b].loc[n, "macs"]), None) for n in lengths
                if _number(by_label[a].loc[n, "macs"]) and _number(by_label[b].loc[n, "macs"])
                and float(by_label[b].loc[n, "macs"]) > 0]
        lines.append({"A": a, "B": b, "time (A/B)": _crossing([t for t in times if t[1] is not None], a, b, exact=False),
                      "executed MACs (A/B)": _crossing(macs, a, b, exact=True)})
    return pd.DataFrame(lines, columns=["A", "B", "time (A/B)", "executed MACs (A/B)"])


def _entry_label(row: pd.Series) -> str:
    """The name a row's `paired` ratios use for it (harness/measure/efficiency_cases.py Entry.label)."""
    return f"{row['method']}[{row['tree']}]" if row.get("tree") else str(row["method"])


def _time_ratio(a: pd.Series, b: pd.Series) -> tuple[Optional[float], Any]:
    """A's time over B's with its 95% interval, from the repetitions that paired them (either
    row's `paired`, or for a reference its ratio_to_ column); None where they were not paired."""
    ratio, interval = _paired(a, b)
    if ratio is not None:
        return ratio, interval
    ratio, interval = _paired(b, a)
    if ratio is None or ratio <= 0:
        return None, None
    inverted = [1 / interval[1], 1 / interval[0]] if _interval(interval) and min(interval) > 0 else None
    return 1 / ratio, inverted


def _paired(row: pd.Series, other_row: pd.Series) -> tuple[Optional[float], Any]:
    other = _entry_label(other_row)
    paired = row.get("paired")
    if isinstance(paired, dict) and isinstance(paired.get(other), dict) and _number(paired[other].get("ratio")):
        return float(paired[other]["ratio"]), paired[other].get("ci95")
    if other in ("sdpa", "full") and _number(row.get(f"ratio_to_{other}")):
        return float(row[f"ratio_to_{other}"]), row.get(f"ratio_to_{other}_ci95")
    return None, None


def _interval(value: Any) -> bool:
    return isinstance(value, (list, tuple)) and len(value) == 2 and all(_number(v) for v in value)


def _side(ratio: float, interval: Any, exact: bool) -> int:
    """-1 when A is cheaper (ratio below 1, the whole interval where timed), +1 when B is, 0 when
    the counts are equal or the interval holds 1 or is missing."""
    if exact:
        return -1 if ratio < 1 else (1 if ratio > 1 else 0)
    if not _interval(interval):
        return 0
    return -1 if interval[1] < 1 else (1 if interval[0] > 1 else 0)


def _crossing(points: list[tuple], a: str, b: str, exact: bool) -> str:
    """Where the ratio A/B crosses 1 between two lengths whose sides are both supported."""
    if len(points) < 2:
        return MISSING
    sides = [_side(r, ci, exact) for _, r, ci in points]
    found = []
    last = None  # the last point with a supported side
    for point, side in zip(points, sides):
        if side == 0:
            continue
        if last is not None and last[1] != side:
            found.append((last[0], point, side))
        last = (point, side)
    if found:
        return "; ".join(_crossing_text(before, after, a if side < 0 else b, exact) for before, after, side in found)
    span = f"n={points[0][0]}-{points[-1][0]}"
    final = f"{_figure(points[-1], exact)} at n={points[-1][0]}"
    if exact and not any(sides):
        return f"equal at every length ({span})"
    if all(side == -1 for side in sides):
        return f"{a} cheaper at every length ({span}; {final})"
    if all(side == 1 for side in sides):
        return f"{b} cheaper at every length ({span}; {final})"
    return f"no crossing that the intervals support ({span}; {final})"


def _crossing_text(before: tuple, after: tuple, cheaper: str, exact: bool) -> str:
    (n0, r0, _), (n1, r1, _) = before, after
    # the log-ratio taken as linear in log-length between the two: where it is 0
    at = math.exp(math.log(n0) + (0 - math.log(r0)) * (math.log(n1) - math.log(n0)) / (math.log(r1) - math.log(r0)))
    return (f"{cheaper} cheaper from ~{sig2(at)} (between n={n0}: {_figure(before, exact)} "
            f"and n={n1}: {_figure(after, exact)})")


def _figure(point: tuple, exact: bool) -> str:
    _, ratio, interval = point
    text = f"{sig2(ratio)}x"
    if not exact and _interval(interval):
        text += f" [{sig2(interval[0])}, {sig2(interval[1])}]"
    return text


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
