"""Where prepared data lives by default: a per-user cache directory, overridable by environment."""

from __future__ import annotations

import os
from pathlib import Path

ENV_VAR = "TREEFORMER_BENCH_DATA"


def default_data_dir() -> Path:
    """`$TREEFORMER_BENCH_DATA` if set, else the platform's user cache dir for `treeformer-bench`."""
    override = os.environ.get(ENV_VAR)
    if override:
        return Path(override).expanduser()
    import platformdirs

    return Path(platformdirs.user_cache_dir("treeformer-bench"))
