"""Training-state checkpoints: written atomically, read back with torch.load(weights_only=True).

A checkpoint holds only tensors and plain Python values (no pickled objects), so loading one can
never run code; RNG states are stored as tensors and lists for the same reason.
"""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any, Optional

import numpy as np
import torch

from bench_common import BenchError
from bench_common.files import write_atomic


def save_checkpoint(path: Path, state: dict[str, Any]) -> None:
    """Writes `state` to a temp file beside `path`, then renames it over `path` (atomic)."""
    write_atomic(path, lambda handle: torch.save(state, handle), binary=True)


def load_checkpoint(path: Path) -> Optional[dict[str, Any]]:
    """The state saved at `path`, None when there is none; a damaged file is a one-line error."""
    path = Path(path)
    if not path.exists():
        return None
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:
        raise BenchError(
            f"checkpoint {path} is unreadable ({type(err).__name__}); delete it to restart that run"
        ) from None
    if not isinstance(state, dict) or "step" not in state:
        raise BenchError(f"checkpoint {path} is not a training-state checkpoint; delete it to restart that run")
    return state


def rng_state() -> dict[str, Any]:
    """Every RNG a run draws from, as tensors and lists (safe for weights_only loading)."""
    kind, keys, pos, has_gauss, gauss = np.random.get_state()
    version, internal, gauss_next = random.getstate()
    state = {
        "torch": torch.get_rng_state(),
        "numpy": {"kind": kind, "keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos),
                  "has_gauss": int(has_gauss), "gauss": float(gauss)},
        "python": [version, list(internal), gauss_next],
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    numpy = state["numpy"]
    np.random.set_state((numpy["kind"], numpy["keys"].numpy().astype(np.uint32), numpy["pos"],
                         numpy["has_gauss"], numpy["gauss"]))
    version, internal, gauss_next = state["python"]
    random.setstate((version, tuple(internal), gauss_next))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
