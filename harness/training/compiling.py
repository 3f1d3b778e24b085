"""`train.compile=on`: the training steps call the model through torch.compile (inductor).

Only the training forward and its backward are compiled. The loop keeps the bare module for
evaluation, checkpoints, `final_test` and FLOP counting, so state dicts never gain torch.compile's
`_orig_mod.` prefix and a checkpoint loads whether the run that wrote it compiled or not.
Evaluation stays eager: it would compile a second (no-grad, eval-mode) set of graphs for a few
batches. Host syncs (the encoder's padding check, the Treeformer diagnostics) become graph breaks:
they run eagerly between compiled pieces. A core whose shapes follow the data
(`Capabilities.data_dependent_shapes`: TF) runs eagerly as a whole (`AttentionLayer`), since
traced it would recompile at every step. Shapes are otherwise dynamo's default: static, made
dynamic only for a dimension that changed.

Compiled code is cached on disk by inductor (its FX graph cache, on by default) in
`inductor_cache_dir()`, so the second run of a sweep with the same shapes loads what the first
compiled instead of generating and building the C++ (or Triton) code again.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

import torch
from torch import nn

INDUCTOR_CACHE_ENV = "TORCHINDUCTOR_CACHE_DIR"


def inductor_cache_dir() -> Path:
    """Where inductor caches compiled graphs: $TORCHINDUCTOR_CACHE_DIR when set, else it is set to
    `<user cache dir>/treeformer-bench/torchinductor`. Torch's own default lies in the temp dir,
    which many systems empty on reboot; every worker process of a sweep resolves the same folder."""
    if not os.environ.get(INDUCTOR_CACHE_ENV):
        import platformdirs

        os.environ[INDUCTOR_CACHE_ENV] = str(Path(platformdirs.user_cache_dir("treeformer-bench")) / "torchinductor")
    return Path(os.environ[INDUCTOR_CACHE_ENV])


class Compilation:
    """One run's use of torch.compile: the module its steps call, and the seconds torch spent compiling.

    Off, `wrap` returns the module itself and `seconds` stays 0, without importing torch._dynamo
    (its import alone takes seconds, which the first step would count). On, the run starts from an
    empty in-memory compile state (`torch._dynamo.reset`): torch keeps compiled code per function
    across models and stops compiling one after `recompile_limit` variants, which consecutive runs
    in one process would reach, and each run then reports its own compile time. `seconds` adds up
    dynamo tracing, AOT autograd, inductor (or loading its disk cache) and the backward compiled at
    the first backward: the time between torch's compile start and end callbacks.
    """

    def __init__(self, mode: str):
        self.mode = mode
        self.seconds = 0.0
        self._started = 0.0
        self._handler: Any = None
        if mode == "on":
            import torch._dynamo

            torch._dynamo.reset()
            inductor_cache_dir()
            self._handler = torch._dynamo.callback_handler
            self._handler.register_start_callback(self._start)
            self._handler.register_end_callback(self._end)

    def wrap(self, net: nn.Module) -> nn.Module:
        """The module the training steps call: `net` compiled, or `net` itself when compile is off."""
        return net if self.mode == "off" else torch.compile(net)

    def _start(self, _args: Any) -> None:
        self._started = time.perf_counter()

    def _end(self, _args: Any) -> None:
        self.seconds += time.perf_counter() - self._started

    def close(self) -> None:
        """Stops counting."""
        if self._handler is not None:
            self._handler.remove_start_callback(self._start)
            self._handler.remove_end_callback(self._end)
            self._handler = None
