"""Tokenised splits cached once as memory-mappable .npy, keyed by task version, parameters and the
data fingerprint (lra/fingerprint.py), so a changed source file means a new entry, never old arrays.

A cache entry is a directory built under a temporary name and renamed into place in one step, so
an interrupted or failing preparation never leaves a half-written entry and never touches an
existing one.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

import numpy as np

SPLITS = ("train", "val", "test")
_COMPLETE = "meta.json"


@dataclass(frozen=True)
class Split:
    """One split: `inputs` (N, n) or (N, 2, n) token ids; `targets` (N,) or (N, n) with -100 = ignore."""

    inputs: np.ndarray
    targets: np.ndarray

    def __len__(self) -> int:
        return int(self.targets.shape[0])


def params_hash(payload: dict[str, Any]) -> str:
    """Short stable hash of a JSON-able dict (sorted keys), used in cache and generation paths."""
    text = json.dumps(payload, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:12]


def entry_dir(data_dir: Path, task_name: str, version: int, key: dict[str, Any]) -> Path:
    return Path(data_dir) / "cache" / task_name / f"v{version}-{params_hash(key)}"


def load_entry(directory: Path) -> Optional[tuple[dict[str, Split], dict[str, Any]]]:
    """The cached splits (memory-mapped, read-only) and the entry's meta, or None without an entry.

    A damaged entry (meta.json missing or unreadable, an array missing, truncated or not the shape
    meta.json records) is removed with a message naming the file, and None is returned, so the
    caller rebuilds it instead of failing every run. Entries appear by one rename, complete, so a
    directory without meta.json is damage, never an entry being written.
    """
    directory = Path(directory)
    if not directory.exists():
        return None
    try:
        return _read_entry(directory)
    except _Damaged as damage:
        print(f"data cache: {damage.path} is damaged ({damage.reason}); rebuilding {directory}", file=sys.stderr)
        _discard(directory)
        return None


class _Damaged(Exception):
    def __init__(self, path: Path, reason: str):
        super().__init__(f"{path}: {reason}")
        self.path, self.reason = path, reason


def _read_entry(directory: Path) -> tuple[dict[str, Split], dict[str, Any]]:
    meta_path = directory / _COMPLETE
    try:
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
        sizes = {name: int(meta["sizes"][name]) for name in SPLITS}
    except FileNotFoundError:
        raise _Damaged(meta_path, "missing") from None
    except (OSError, UnicodeDecodeError, ValueError, KeyError, TypeError) as err:
        raise _Damaged(meta_path, f"unreadable: {type(err).__name__}") from None
    splits = {}
    for name in SPLITS:
        arrays = []
        for part in ("inputs", "targets"):
            path = directory / f"{name}_{part}.npy"
            try:
                array = np.load(path, mmap_mode="r")
            except FileNotFoundError:
                raise _Damaged(path, "missing") from None
            except (OSError, ValueError, EOFError) as err:
                raise _Damaged(path, f"unreadable: {str(err).strip() or type(err).__name__}") from None
            expected = meta.get("arrays", {}).get(path.name)
            if array.shape[0] != sizes[name] or (expected and expected != _describe(array)):
                raise _Damaged(path, f"holds {_describe(array)}, meta.json records {expected or sizes[name]}")
            arrays.append(array)
        splits[name] = Split(*arrays)
    return splits, meta


def _describe(array: np.ndarray) -> dict[str, Any]:
    return {"shape": list(array.shape), "dtype": str(array.dtype)}


def _discard(directory: Path) -> None:
    """Moves a damaged entry out of the way in one rename, then deletes it."""
    trash = Path(tempfile.mkdtemp(prefix=f".{directory.name}.damaged.", dir=directory.parent))
    try:
        os.replace(directory, trash / "entry")
    except FileNotFoundError:
        pass  # another process discarded it first
    finally:
        shutil.rmtree(trash, ignore_errors=True)


def save_entry(directory: Path, splits: dict[str, Split], meta: dict[str, Any]) -> None:
    """Writes all splits to a temporary sibling directory, then renames it into place atomically."""
    directory.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{directory.name}.", dir=directory.parent))
    try:
        for name in SPLITS:
            np.save(staging / f"{name}_inputs.npy", np.ascontiguousarray(splits[name].inputs))
            np.save(staging / f"{name}_targets.npy", np.ascontiguousarray(splits[name].targets))
        sizes = {name: len(splits[name]) for name in SPLITS}
        arrays = {path.name: _describe(np.load(path, mmap_mode="r")) for path in sorted(staging.glob("*.npy"))}
        (staging / _COMPLETE).write_text(json.dumps({**meta, "sizes": sizes, "arrays": arrays}, indent=2, sort_keys=True))
        try:
            os.replace(staging, directory)
        except OSError:
            # Another process finished the same entry first (rename onto a non-empty directory
            # fails): its entry is equivalent, keep it.
            if not (directory / _COMPLETE).is_file():
                raise
    finally:
        if staging.exists():
            shutil.rmtree(staging, ignore_errors=True)
