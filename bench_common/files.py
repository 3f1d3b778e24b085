"""Atomic file writes shared by records, checkpoints and the efficiency results.

Readers (a report, a resumed sweep, another process) must see the old file or the new one, never
half of one, even after a crash: write a temporary sibling, fsync it, rename it over the target.
The temporary is named `.<name>.<pid>.tmp` so a sweep can tell a killed writer's leftovers from a
live writer's file (harness/sweep/driver.py `remove_stale_temporaries`).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import IO, Any, Callable


def write_atomic(path: Path, write: Callable[[IO], Any], binary: bool = False) -> None:
    """Calls `write(handle)` on a temporary sibling of `path`, then renames it over `path`."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with open(tmp, "wb" if binary else "w", **({} if binary else {"encoding": "utf-8"})) as handle:
            write(handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def write_json_atomic(path: Path, data: Any) -> None:
    """`data` as indented JSON (NaN refused: JSON cannot hold it), written atomically."""

    def write(handle: IO) -> None:
        json.dump(data, handle, indent=2, allow_nan=False, default=_jsonable)
        handle.write("\n")

    write_atomic(path, write)


def _jsonable(value: Any) -> Any:
    if hasattr(value, "item"):  # numpy / torch scalars
        return value.item()
    if isinstance(value, (set, tuple)):
        return list(value)
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")
