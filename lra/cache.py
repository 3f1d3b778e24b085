"""Tokenised splits cached once as memory-mappable .npy, keyed by task version and parameters.

A cache entry is a directory built under a temporary name and renamed into place in one step, so
an interrupted or failing preparation never leaves a half-written entry and never touches an
existing one.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
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


def load_entry(directory: Path) -> Optional[dict[str, Split]]:
    """The cached splits (memory-mapped, read-only), or None when no complete entry exists."""
    if not (directory / _COMPLETE).is_file():
        return None
    return {
        name: Split(
            np.load(directory / f"{name}_inputs.npy", mmap_mode="r"),
            np.load(directory / f"{name}_targets.npy", mmap_mode="r"),
        )
        for name in SPLITS
    }


def save_entry(directory: Path, splits: dict[str, Split], meta: dict[str, Any]) -> None:
    """Writes all splits to a temporary sibling directory, then renames it into place atomically."""
    directory.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{directory.name}.", dir=directory.parent))
    try:
        for name in SPLITS:
            np.save(staging / f"{name}_inputs.npy", np.ascontiguousarray(splits[name].inputs))
            np.save(staging / f"{name}_targets.npy", np.ascontiguousarray(splits[name].targets))
        sizes = {name: len(splits[name]) for name in SPLITS}
        (staging / _COMPLETE).write_text(json.dumps({**meta, "sizes": sizes}, indent=2, sort_keys=True))
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


def atomic_write_text(path: Path, text: str) -> None:
    """Writes a file via a temporary sibling and os.replace, so readers never see half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(handle, "w", encoding="utf-8", newline="") as stream:
            stream.write(text)
        os.replace(temporary, path)
    except BaseException:
        if os.path.exists(temporary):
            os.unlink(temporary)
        raise
