"""The interleaving scheduler: every entry of one (length, scope, pass) timed in turn, repeatedly.

Entries are called one after another within a repetition, the first of them rotating, so a burst
of noise from other processes hits all of them alike. Each repetition gives one paired ratio per
pair of entries; a row's ratios (`ratio_to_sdpa`, `ratio_to_full`, and `paired`, its ratio to
every other entry of the group) are geometric means of those with the 95% t interval of the mean
log-ratio (harness/measure/timing.py `paired_ratio`). Repetitions go on until every interval to
the references lies within +-`ci_target` of its ratio, or the group's time cap (`rep_budget_s`)
or `max_reps` ends them (the rows then say `time_capped`), but never before the group's minimum
(`EfficiencyOptions.min_reps_at`). One extra, profiled call per cell measures peak memory and
checks the per-call budget first.
"""

from __future__ import annotations

import time
from typing import Optional

from bench_common import BenchError, first_line
from harness.measure.efficiency_cases import Case, Entry, build_case
from harness.measure.efficiency_limits import History, free_memory, skip_reason
from harness.measure.efficiency_options import REFERENCES, EfficiencyOptions
from harness.measure.timing import extra_memory_mb, paired_ratio, summarize, time_block
from harness.training.failures import classify_exception


def new_row(entry: Entry, seq_len: int, scope: str, pass_: str, threads: int) -> dict:
    method = entry.method
    return {"method": method.label, "attention": method.attention, "options": method.options, "tree": entry.tree,
            "seq_len": seq_len, "scope": scope, "pass": pass_, "threads": threads, "status": "ok",
            "time_ms": None, "reps": None, "time_capped": None,
            "ratio_to_sdpa": None, "ratio_to_sdpa_ci95": None, "ratio_to_full": None, "ratio_to_full_ci95": None,
            "paired": {}, "peak_memory_mb": None, "macs": None, "reason": None}


def measure_group(histories: dict[Entry, History], seq_len: int, scope: str, pass_: str, opts: EfficiencyOptions,
                  device: str, memory_limit: Optional[float], threads: int) -> dict[Entry, dict]:
    """The rows of all entries at one (length, scope, pass): first calls, then interleaved repetitions."""
    rows = {entry: new_row(entry, seq_len, scope, pass_, threads) for entry in histories}
    cases: dict[Entry, Case] = {}
    first_seconds: dict[Entry, float] = {}
    for entry, history in histories.items():
        row = rows[entry]
        skip = skip_reason(entry, history, seq_len, scope, pass_, opts, device, memory_limit)
        if skip:
            row["status"], row["reason"] = skip
            continue
        try:
            case = build_case(entry, seq_len, scope, pass_, opts, device)
        except BenchError as err:  # options valid in general, not at this length (a tree taller than n allows)
            row["status"] = "unsupported"
            row["reason"] = f"not buildable at length {seq_len}: {first_line(err).split('; choose')[0]}"
            continue
        try:
            row["peak_memory_mb"], seconds = extra_memory_mb(case.run, device)
            row["macs"] = case.macs()
        except Exception as err:  # a failing method becomes a row; the sweep goes on
            row["status"], row["reason"] = classify_exception(err)  # as a failing run is classified
            if row["status"] == "oom":
                history.stopped = ("oom", f"skipped: out of memory at length {seq_len}")
            free_memory(device)
            continue
        if seconds > opts.cell_budget_s:
            row["status"] = "timeout"
            row["reason"] = f"one call took {seconds:.1f} s, over the cell budget of {opts.cell_budget_s:g} s"
            history.stopped = ("timeout", f"skipped: timed out at length {seq_len}")
            continue
        cases[entry], first_seconds[entry] = case, seconds

    numbers = {e: int(min(100, max(1, round(opts.block_s / max(s, 1e-9))))) for e, s in first_seconds.items()}
    times, capped = _interleave(cases, numbers, rows, opts, opts.min_reps_at(seq_len))
    del cases
    free_memory(device)

    ok = {entry: samples for entry, samples in times.items() if rows[entry]["status"] == "ok" and samples}
    for entry, samples in ok.items():
        row = rows[entry]
        measurement = summarize(f"{entry.label} n={seq_len} {scope} {pass_}", samples, numbers[entry])
        row.update(time_ms=measurement.median * 1e3, time_iqr_ms=measurement.iqr * 1e3, reps=len(samples),
                   time_capped=capped)
        for other, reference in ok.items():
            if other != entry:
                ratio, interval = paired_ratio(samples, reference)
                row["paired"][other.label] = {"ratio": ratio, "ci95": list(interval) if interval else None}
        for reference in REFERENCES:
            ratio, interval = _ratio_to(entry, samples, ok, reference)
            row[f"ratio_to_{reference.label}"] = ratio
            row[f"ratio_to_{reference.label}_ci95"] = interval
        histories[entry].add(seq_len, measurement.median, row["peak_memory_mb"])
    return rows


def _ratio_to(entry: Entry, samples: list[float], ok: dict[Entry, list[float]], reference) -> tuple:
    key = Entry(reference)
    if key not in ok:
        return None, None
    if key == entry:
        return 1.0, [1.0, 1.0]
    ratio, interval = paired_ratio(samples, ok[key])
    return ratio, list(interval) if interval else None


def _interleave(cases: dict[Entry, Case], numbers: dict[Entry, int], rows: dict[Entry, dict],
                opts: EfficiencyOptions, min_reps: int) -> tuple[dict[Entry, list[float]], bool]:
    """Seconds per call of every repetition of each entry, and whether the time cap ended them."""
    times: dict[Entry, list[float]] = {e: [] for e in cases}
    order = list(cases)
    started, reps = time.perf_counter(), 0
    while order:
        shift = reps % len(order)  # rotate who goes first, so no entry always follows another
        for entry in order[shift:] + order[:shift]:
            if entry not in cases:
                continue
            try:
                times[entry].append(time_block(cases[entry].run, numbers[entry]))
            except Exception as err:
                rows[entry]["status"], rows[entry]["reason"] = classify_exception(err)  # as a failing run is classified
                del cases[entry]
        reps += 1
        if reps >= min_reps and _intervals_within(times, rows, opts.ci_target):
            return times, False
        if reps >= min_reps and (reps >= opts.max_reps or time.perf_counter() - started > opts.rep_budget_s):
            return times, True
    return times, False


def _intervals_within(times: dict[Entry, list[float]], rows: dict[Entry, dict], target: float) -> bool:
    """Whether every entry's 95% interval of its ratio to each reference lies within +-target."""
    ok = {e: s for e, s in times.items() if rows[e]["status"] == "ok" and s}
    for reference in REFERENCES:
        key = Entry(reference)
        if key not in ok:
            continue
        for entry, samples in ok.items():
            if entry == key:
                continue
            ratio, interval = paired_ratio(samples, ok[key])
            if interval is None or interval[1] > ratio * (1 + target) or interval[0] < ratio * (1 - target):
                return False
    return True
