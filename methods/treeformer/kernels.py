"""The tree methods' C++ loops (`path_kernels.cpp`, `routing_kernels.cpp`): built on first use.

torch's cpp_extension compiles them with the system compiler and caches the library under torch's
extension folder (about 20 s, once per machine and checkout); they run on the CPU only.
`available()` says whether they built; where they cannot (no compiler, no ninja, another device),
the methods run their eager PyTorch code, which computes the same functions.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import warnings
from pathlib import Path
from typing import Optional

import torch

SOURCES = [Path(__file__).with_name(name) for name in ("path_kernels.cpp", "routing_kernels.cpp")]
# One build folder per checkout: torch keys its cache by name and rebuilds when the source paths
# change, so two checkouts sharing one name would rebuild each other's library on every first use.
NAME = "treeformer_kernels_" + hashlib.sha1(str(SOURCES[0].parent).encode()).hexdigest()[:10]
# OpenMP: at::parallel_for runs serially unless the extension is compiled with it; the library it
# links, libgomp.so.1, is the one torch has loaded already. -mavx2 -mfma measured no faster.
FLAGS = ["-O3", "-fopenmp"]


_built: Optional[bool] = None  # None until the first call of `available`


@torch.compiler.assume_constant_result  # torch.compile reads it while tracing, not per call
def available() -> bool:
    """True when the kernels are built and loaded (building them on the first call)."""
    global _built
    if _built is None:
        _built = _build()
    return _built


def run_on(device_type: str) -> bool:
    """Whether the kernels run for tensors on this device type: the CPU, where they built."""
    return device_type == "cpu" and available()


def _build() -> bool:
    try:
        from torch.utils import cpp_extension

        if shutil.which("ninja") is None:  # torch's builder calls `ninja`; the pip wheel ships one
            import ninja

            os.environ["PATH"] = ninja.BIN_DIR + os.pathsep + os.environ.get("PATH", "")
        cpp_extension.load(name=NAME, sources=[str(source) for source in SOURCES], extra_cflags=FLAGS,
                           extra_ldflags=["-fopenmp"], is_python_module=False)
    except Exception as error:  # no compiler, no ninja, a failed build: the eager code remains
        warnings.warn(f"the tree methods' C++ kernels could not be built ({error}); they run their eager code")
        return False
    _register_fakes()
    return True


def _register_fakes() -> None:
    """Shapes without data, so torch.compile can trace through the kernels."""

    @torch.library.register_fake("treeformer_path::path_dots")
    def _(nodes, path, rows, bias, alpha, softmax):
        return nodes.new_empty(path.shape)

    @torch.library.register_fake("treeformer_path::softmax_backward")
    def _(weights, grad):
        return weights.new_empty(weights.shape)

    @torch.library.register_fake("treeformer_path::path_mix")
    def _(nodes, path, weights):
        return nodes.new_empty(path.shape[:2] + nodes.shape[2:])

    @torch.library.register_fake("treeformer_path::path_scatter")
    def _(weights, rows, path, num_nodes):
        return rows.new_empty((rows.shape[0], num_nodes, rows.shape[2]))

    @torch.library.register_fake("treeformer_path::leaf_sums")
    def _(keys, values, leaf, num_leaves):
        batch, heads, _, dim = keys.shape
        dtype = torch.promote_types(keys.dtype, torch.float32)
        return keys.new_empty((batch * heads, num_leaves, 2 * dim + 1), dtype=dtype)

    @torch.library.register_fake("treeformer_path::leaf_sums_backward")
    def _(grad, keys, values, leaf):
        return keys.new_empty(keys.shape), keys.new_empty(keys.shape), keys.new_empty(keys.shape[:-1])

    @torch.library.register_fake("treeformer_routing::dgt_walk")
    def _(z):
        heads, nodes, tokens = z.shape
        height = (nodes + 1).bit_length() - 1
        leaf = z.new_empty((heads, 1, tokens), dtype=torch.long)
        return leaf, z.new_empty((heads, height, tokens), dtype=torch.long), z.new_empty((heads, 1, tokens))

    @torch.library.register_fake("treeformer_routing::dgt_walk_backward")
    def _(z, walked, beta, factor):
        return z.new_empty(z.shape)
