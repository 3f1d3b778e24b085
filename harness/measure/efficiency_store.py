"""efficiency.json as a resumable store: rows keyed by what they measure, kept across calls.

A row's key is (method label, options, tree, length, scope, pass, threads). A call keeps every
finished row (an "error" row is measured again), adds the rows it measures, and writes the file
after every group, atomically, so Ctrl-C or a kill loses at most the group being timed. Settings
that decide what a number means (heads, head size, dtype, device, the repetition rules) must equal
the file's: a call with other settings is refused in one line, never mixed in.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Optional

from bench_common import BenchError
from harness.measure.efficiency_options import MEASUREMENT_SETTINGS

RESULTS_FILE = "efficiency.json"


def row_key(row: dict) -> tuple:
    return (row["method"], json.dumps(row.get("options") or {}, sort_keys=True), row.get("tree"),
            row["seq_len"], row["scope"], row["pass"], row.get("threads"))


def finished(row: dict) -> bool:
    return row["status"] != "error"


def load_results(path: Path) -> Optional[dict[str, Any]]:
    """The file's contents, None when there is none; a file that is not an efficiency result is
    refused in one line (and left as it is)."""
    if not path.exists():
        return None
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as err:
        raise BenchError(f"{path}: cannot read the earlier efficiency results ({type(err).__name__}: {err}); "
                         f"move it away or choose another --out") from None
    rows = data.get("rows") if isinstance(data, dict) else None
    needed = ("method", "seq_len", "scope", "pass", "status")
    if not isinstance(rows, list) or not isinstance(data.get("settings"), dict) \
            or not all(isinstance(r, dict) and all(k in r for k in needed) for r in rows):
        raise BenchError(f"{path}: expected efficiency results (an object with 'settings' and 'rows', each row "
                         f"with {', '.join(needed)}); move it away or choose another --out")
    return data


def check_same_settings(path: Path, earlier: dict[str, Any], now: dict[str, Any]) -> None:
    """Refuses to add rows measured under other settings than the file's."""
    changed = [key for key in (*MEASUREMENT_SETTINGS, "device") if earlier.get(key) != now.get(key)]
    if changed:
        shown = ", ".join(f"{k}: {earlier.get(k, '(absent)')!r} -> {now.get(k)!r}" for k in changed)
        raise BenchError(f"{path} was measured with other settings ({shown}); rerun with the file's settings "
                         f"to add to it, or choose another --out")


def merged_settings(earlier: Optional[dict[str, Any]], now: dict[str, Any]) -> dict[str, Any]:
    """This call's settings, with the lengths, methods and options of every call so far."""
    if not earlier:
        return now
    settings = dict(now)
    settings["seq_lens"] = sorted(set(earlier.get("seq_lens", [])) | set(now["seq_lens"]))
    settings["methods"] = list(dict.fromkeys([*earlier.get("methods", []), *now["methods"]]))
    settings["attention_options"] = {**earlier.get("attention_options", {}), **now["attention_options"]}
    return settings
