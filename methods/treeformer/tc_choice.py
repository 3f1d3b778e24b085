"""Which TC implementation runs when `implementation="auto"`: the faster one where it was measured.

The table (`tc_measured.py` beside this module) is written by `scripts/measure_tc_implementations.py`,
which also writes the timings it rests on to `results/treeformer_speed/tc_implementations.{md,json}`.
Keyed by device type; a (seq_len, height) not in the table takes the measured point nearest in
log2(seq_len), then in height. A device with no measurements runs "path", the implementation with
the fewest MACs.
"""

from __future__ import annotations

import math

from methods.treeformer.tc_measured import FASTER


def _table() -> dict[str, list[tuple[int, int, str]]]:
    return FASTER


def choose_implementation(device_type: str, seq_len: int, height: int) -> str:
    """"all-nodes" or "path" for one TC layer on `device_type` at this sequence length and height."""
    rows = _table().get(device_type)
    if not rows:
        return "path"
    _, _, best = min(rows, key=lambda row: (abs(math.log2(row[0]) - math.log2(max(seq_len, 1))), abs(row[1] - height)))
    return best
