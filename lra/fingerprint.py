"""Which exact raw data a cache entry, a config hash and a record stand for: the data fingerprint.

Files are fingerprinted by path (relative to the source root), size and modification time in
nanoseconds, not by content. The sources reach ~8 GB and 200k files (Pathfinder), and a
fingerprint is taken every time a sweep is planned and every time a run starts; stat costs
microseconds per file where hashing would read gigabytes. Replacing, editing, adding or deleting a
file changes the fingerprint; touching one also does (a needless rebuild, never a stale one). What
it misses: a different file given the same size *and* the same mtime on purpose (`touch -r`,
`cp -p` of a same-sized file), and a copy to another machine that does not keep mtimes gets a new
fingerprint (its runs are redone there, which errs on the safe side).

Generated sources are fingerprinted by their recipe (task, version, params): the generators are
seeded, so the recipe determines the files, and the fingerprint is known before generating them.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Optional

from bench_common import BenchError

KINDS = ("official", "generated", "tfds", "files", "missing")
MISSING = "missing"


@dataclass(frozen=True)
class Source:
    """Where a task's raw data is read from.

    kind: "official" (LRA release files), "generated" (written by our generators from the params),
    "tfds" (a prepared TFDS directory), "files" (another published layout, e.g. aclImdb/),
    "missing" (nothing found: preparing fails with the loader's message). `files` are the files
    the loader reads (empty for generated and missing sources).
    """

    kind: str
    root: Optional[Path]
    files: tuple[Path, ...] = ()

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise BenchError(f"data source kind {self.kind!r} is not one of {', '.join(KINDS)}")


def files_under(directory: Path) -> list[Path]:
    """Every regular file below `directory` (os.walk: fast on directories of 100k files)."""
    found = []
    for parent, _, names in os.walk(directory):
        found.extend(Path(parent) / name for name in names)
    return found


def fingerprint(source: Source, recipe: dict[str, Any]) -> str:
    """16 hex digits naming the data: the files' (path, size, mtime), or the recipe when generated."""
    digest = hashlib.sha256(source.kind.encode())
    if source.kind == MISSING:
        return MISSING
    if source.kind == "generated":
        digest.update(json.dumps(recipe, sort_keys=True, default=str).encode())
        return digest.hexdigest()[:16]
    for line in _stat_lines(source.root, source.files):
        digest.update(line)
    return digest.hexdigest()[:16]


def _stat_lines(root: Optional[Path], files: Iterable[Path]) -> list[bytes]:
    lines = []
    for path in files:
        try:
            status = os.stat(path)
        except OSError as err:
            raise BenchError(f"data file {path} vanished or is unreadable while fingerprinting ({err.strerror})") from None
        name = os.path.relpath(path, root) if root is not None else str(path)
        lines.append(f"{name}\0{status.st_size}\0{status.st_mtime_ns}\n".encode("utf-8", "surrogateescape"))
    return sorted(lines)
