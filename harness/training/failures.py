"""How a failing run is classified: out-of-memory or another error, with a one-line reason.

Lives in training/ because the loop itself must tell OOM from other errors, and the sweep's
executors classify what escaped a worker the same way.
"""

from __future__ import annotations

import traceback

from bench_common import BenchError

_OOM_MARKERS = ("out of memory", "can't allocate memory", "cannot allocate memory")


def is_out_of_memory(err: BaseException) -> bool:
    """MemoryError, CUDA OOM, or torch's CPU allocator failing (a RuntimeError, e.g. under the
    subprocess executor's RLIMIT_AS cap: "DefaultCPUAllocator: can't allocate memory")."""
    message = str(err).lower()
    return isinstance(err, MemoryError) or any(marker in message for marker in _OOM_MARKERS)


def classify_exception(err: BaseException) -> tuple[str, str]:
    """(status, reason) of an exception that escaped run_fn in a worker process.

    Out-of-memory (MemoryError, or torch's allocator errors) becomes `oom`; anything else `error`,
    with the exception type and its last traceback frame so the row says where it broke.
    """
    message = " ".join(str(err).split())
    if is_out_of_memory(err):
        return "oom", f"{type(err).__name__}: {message}"[:500]
    if isinstance(err, BenchError):
        return "error", message
    frames = traceback.extract_tb(err.__traceback__)
    where = f" (at {frames[-1].filename}:{frames[-1].lineno})" if frames else ""
    return "error", f"{type(err).__name__}: {message}{where}"[:500]
