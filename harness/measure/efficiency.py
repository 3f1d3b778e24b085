"""The efficiency sweep: time, peak memory and executed MACs of attention methods against length.

For every length, scope ("core" or "layer") and pass ("forward" or "forward_backward"), the methods
and the references (`sdpa`, and `full` where it runs) are timed in interleaved repetitions in one
process, and each row carries its paired ratios to the references and to every other method of
its group (harness/measure/efficiency_scheduler.py). `macs` is what the timed call executed, one
forward pass: the formula of a data-independent method, the count a data-dependent core reports
for the timed input. Cells predicted past the time budget or memory limit are rows that say so
instead of runs (harness/measure/efficiency_limits.py). The sweep resumes: `<out>/efficiency.json`
keeps its finished rows, gains new ones, and refuses other settings (harness/measure/efficiency_store.py).

The parts: efficiency_options (settings, timed methods), efficiency_cases (the timed calls),
efficiency_limits (prediction, probes, failures), efficiency_scheduler (interleaved repetitions),
efficiency_store (the results file). How to read and run it: docs/efficiency.md.
"""

from __future__ import annotations

import os
import sys
from dataclasses import fields
from pathlib import Path
from typing import Optional, Union

import torch

from bench_common import BenchError
from harness.measure.efficiency_cases import Entry, entries_of
from harness.measure.efficiency_limits import History, default_memory_limit_mb
from harness.measure.efficiency_options import (REFERENCES, EfficiencyOptions, TimedMethod, check_seq_lens,
                                                parse_options)
from harness.measure.efficiency_scheduler import measure_group
from harness.measure.efficiency_store import (RESULTS_FILE, check_same_settings, finished, load_results,
                                              merged_settings, row_key)
from harness.measure.env import environment, resolve_device
from bench_common.files import write_json_atomic
from methods import get_attention_class, load_plugin
from methods.registry import validate_attention_options

RATIO_NOTE = "geometric mean of per-repetition ratios; ci95: Student t interval of the mean log-ratio"


def run_efficiency(methods: list[Union[str, TimedMethod]], seq_lens: list[int], out_dir: Path, device: str,
                   plugins: list[str], options: dict) -> Path:
    """Runs the sweep into `<out_dir>/efficiency.json` (written after every group, so an
    interrupted sweep keeps what it measured and a rerun resumes it); returns its path.

    `methods`: registry names, or TimedMethods (a suite variant's label, core and options)."""
    for plugin in plugins:
        load_plugin(plugin)
    opts = parse_options(dict(options))
    device = resolve_device(device)
    timed = timed_methods(methods)
    seq_lens = check_seq_lens(seq_lens, opts)
    path = _writable(Path(out_dir)) / RESULTS_FILE
    earlier = load_results(path)
    memory_limit = opts.memory_limit_mb if opts.memory_limit_mb is not None else default_memory_limit_mb(device)
    settings = {**{f.name: getattr(opts, f.name) for f in fields(opts)}, "memory_limit_mb": memory_limit,
                "device": device, "seq_lens": seq_lens, "methods": [m.label for m in timed],
                "attention_options": {m.label: m.options for m in timed if m.options}, "ratio": RATIO_NOTE}
    if earlier:
        check_same_settings(path, earlier["settings"], settings)

    threads_before = torch.get_num_threads()
    if opts.num_threads is not None:
        torch.set_num_threads(opts.num_threads)
    try:
        env = environment(device)
        calls = [*(earlier or {}).get("calls", []), {"env": env, "seq_lens": seq_lens,
                                                   "methods": settings["methods"]}]
        result = {"env": (earlier or {}).get("env", env),
                  "settings": merged_settings(earlier["settings"] if earlier else None, settings),
                  "calls": calls, "rows": list((earlier or {}).get("rows", []))}
        _sweep(timed, seq_lens, path, result, opts, device, memory_limit)
    finally:
        torch.set_num_threads(threads_before)
    return path


def timed_methods(methods: list[Union[str, TimedMethod]]) -> list[TimedMethod]:
    """The references, then the given methods once each; names and options are checked now."""
    chosen: list[TimedMethod] = list(REFERENCES)
    for method in methods:
        method = TimedMethod.of(method) if isinstance(method, str) else method
        get_attention_class(method.attention)  # unknown names fail before anything runs
        method = TimedMethod.of(method.label, method.attention,
                                validate_attention_options(method.attention, method.options))
        same_label = [m for m in chosen if m.label == method.label]
        if same_label and same_label[0] != method:
            if method.label in (r.label for r in REFERENCES):
                raise BenchError(f"efficiency: '{method.label}' is a reference, timed with its default options; "
                                 f"give a variant with other options another label")
            raise BenchError(f"efficiency: two methods are labelled '{method.label}' with different options")
        if not same_label:
            chosen.append(method)
    return chosen


def failed_rows(path: Path) -> list[dict]:
    """Rows of an efficiency.json whose cell raised an error (oom, timeout, unsupported are results)."""
    return [row for row in load_results(Path(path))["rows"] if row["status"] == "error"]


def _writable(out_dir: Path) -> Path:
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
        probe = out_dir / f".write-check.{os.getpid()}.tmp"  # the stale-file cleanup's pattern
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as err:
        raise BenchError(f"--out {out_dir}: cannot write the efficiency results there ({err.strerror or err})") from None
    return out_dir


def _sweep(methods: list[TimedMethod], seq_lens: list[int], path: Path, result: dict, opts: EfficiencyOptions,
           device: str, memory_limit: Optional[float]) -> None:
    threads = torch.get_num_threads()
    call = len(result["calls"]) - 1
    rows = {row_key(row): row for row in result["rows"]}
    entries = entries_of(methods)
    references = [e for e in entries if e.method in REFERENCES]
    histories = {(e, s, p): History() for e in entries for s in opts.scopes for p in opts.passes}
    for seq_len in seq_lens:
        for scope in opts.scopes:
            for pass_ in opts.passes:
                keys = {e: _key(e, seq_len, scope, pass_, threads) for e in entries}
                todo = [e for e in entries if keys[e] not in rows or not finished(rows[keys[e]])]
                if not todo:
                    continue
                group = {e: _seeded(histories[(e, scope, pass_)], rows.values(), e, seq_len, scope, pass_, threads)
                         for e in dict.fromkeys(references + todo)}
                print(f"efficiency n={seq_len} {scope} {pass_}: timing {', '.join(e.label for e in group)}",
                      file=sys.stderr, flush=True)
                measured = measure_group(group, seq_len, scope, pass_, opts, device, memory_limit, threads)
                for entry in todo:
                    rows[keys[entry]] = {**measured[entry], "call": call}
                result["rows"] = list(rows.values())
                write_json_atomic(path, result)
                _log_group(seq_len, scope, pass_, list(measured.values()))


def _key(entry: Entry, seq_len: int, scope: str, pass_: str, threads: int) -> tuple:
    """The row key (efficiency_store.row_key) of an entry's row."""
    return (entry.method.label, entry.method.options_json, entry.tree, seq_len, scope, pass_, threads)


def _seeded(history: History, rows, entry: Entry, seq_len: int, scope: str, pass_: str, threads: int) -> History:
    """The history with what earlier calls measured below this length (a resumed sweep predicts
    and stops as an uninterrupted one would)."""
    mine = _key(entry, seq_len, scope, pass_, threads)
    for row in rows:
        key = row_key(row)
        if key[:3] != mine[:3] or key[4:] != mine[4:] or row["seq_len"] >= seq_len:
            continue
        if row["status"] == "ok" and row.get("time_ms") is not None:
            history.add(row["seq_len"], row["time_ms"] / 1e3, row.get("peak_memory_mb") or 0.0)
        elif row["status"] in ("oom", "timeout") and not history.stopped:
            history.stopped = (row["status"], f"skipped: {row['status']} at length {row['seq_len']}")
    return history


def _log_group(seq_len: int, scope: str, pass_: str, rows: list[dict]) -> None:
    cells = []
    for row in rows:
        name = f"{row['method']}[{row['tree']}]" if row["tree"] else row["method"]
        if row["status"] != "ok":
            cells.append(f"{name} {row['status'].upper()}")
            continue
        ratio = ""
        if row["ratio_to_sdpa_ci95"] is not None:
            low, high = row["ratio_to_sdpa_ci95"]
            ratio = f" ({row['ratio_to_sdpa']:.2f}x sdpa, 95% {low:.2f}-{high:.2f})"
        cells.append(f"{name} {row['time_ms']:.1f} ms{ratio}")
    capped = any(row["time_capped"] for row in rows)
    print(f"efficiency n={seq_len} {scope} {pass_}{' (time-capped)' if capped else ''}: " + ", ".join(cells),
          file=sys.stderr, flush=True)
