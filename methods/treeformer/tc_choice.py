"""Which TC implementation runs when `implementation="auto"`: the fastest measured where it was measured.

The table (`tc_measured.py` beside this module) is written by `scripts/measure_tc_implementations.py`,
which also writes the timings it rests on to `results/treeformer_speed/tc_implementations.{md,json}`.
Keyed by device type, each row ranks the implementations, fastest first; a (seq_len, height) not
in the table takes the measured point nearest in log2(seq_len), then in height. "fused-path" is
skipped where its kernels are not built. A device with no measurements runs "path", the eager
implementation with the fewest MACs.
"""

from __future__ import annotations

import math

from methods.treeformer.tc_measured import RANKING


def _table() -> dict[str, list[tuple[int, int, tuple[str, ...]]]]:
    return RANKING


def choose_implementation(device_type: str, seq_len: int, height: int, fused: bool) -> str:
    """"all-nodes", "path" or "fused-path" (only when `fused`: its kernels are built) for one TC layer
    on `device_type` at this sequence length and height."""
    rows = _table().get(device_type)
    if not rows:
        return "path"
    _, _, ranking = min(rows, key=lambda row: (abs(math.log2(row[0]) - math.log2(max(seq_len, 1))), abs(row[1] - height)))
    return next(name for name in ranking if fused or name != "fused-path")
