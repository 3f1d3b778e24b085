"""One writer per output folder: a sweep holds `<out>/.sweep.lock` while it runs.

The lock is an advisory `flock` on that file, so the kernel drops it when its holder ends, however
it ends (kill -9 included): a stale lock never blocks a later sweep. A second sweep on a folder in
use is refused with one line, before it plans or writes anything, so two processes never write the
same record or `config.json`. The file stays empty and is never rewritten, so taking the lock
leaves every file of a folder as it was.
"""

from __future__ import annotations

import fcntl
import os
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from bench_common import BenchError

LOCK_NAME = ".sweep.lock"


@contextmanager
def output_lock(out: Path) -> Iterator[None]:
    """Holds the folder's lock for the body; refuses (BenchError) when another process holds it."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    path = out / LOCK_NAME
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise BenchError(f"{out} is in use by another sweep (it holds {path}); wait for it to end "
                             f"or choose another --out") from None
        yield
    finally:
        os.close(fd)  # closing the only descriptor releases the flock

