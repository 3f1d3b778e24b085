"""DistributedDataParallel for one run launched by torchrun: process group, batch sharding, rank 0.

`torchrun --nproc_per_node=N run_benchmark.py run ...` starts N copies of the command; each
calls `init_from_env`, trains the same model on its 1/N of every global batch, and DDP averages
gradients, so the global batch size stays as configured and a step equals one single-process
step up to floating-point summation order. Only the primary rank writes records.

Sharding scheme: every rank draws the same global batch of indices from the run's seeded sampler
(exactly what one process would draw) and keeps its contiguous slice (`local_slice`). This is the
distributed sampler; torch's DistributedSampler would shard the epoch instead, so the global
batches would differ from a single-process run's and the two could not be compared.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Mapping, Optional

import torch
import torch.distributed as dist
from torch import nn

from bench_common import BenchError

_TORCHRUN_VARIABLES = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")


@dataclass(frozen=True)
class DistInfo:
    """Where this process stands in the job; world_size 1 and backend None when not distributed."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    backend: Optional[str] = None

    @property
    def is_primary(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


def launched_by_torchrun(environ: Optional[Mapping[str, str]] = None) -> bool:
    """True when torchrun (or another launcher setting its variables) started this process."""
    environ = os.environ if environ is None else environ
    return all(name in environ for name in _TORCHRUN_VARIABLES)


def world_from_env(environ: Optional[Mapping[str, str]] = None) -> DistInfo:
    """Reads rank and world size from the launcher's variables without joining any group.

    Lets the CLI validate a sweep (batch sizes, executor) against the world size before any
    process group or run starts.
    """
    environ = os.environ if environ is None else environ
    if not launched_by_torchrun(environ):
        return DistInfo()
    return DistInfo(
        rank=int(environ["RANK"]), world_size=int(environ["WORLD_SIZE"]), local_rank=int(environ["LOCAL_RANK"])
    )


def init_from_env(device: str = "cpu", environ: Optional[Mapping[str, str]] = None) -> DistInfo:
    """Joins the process group torchrun prepared: NCCL for CUDA, gloo on CPU.

    Returns the single-process DistInfo when not launched by torchrun (or launched with one
    process), so callers need no special case. Idempotent.
    """
    info = world_from_env(environ)
    if not info.distributed:
        return info
    cuda = str(device).startswith("cuda")
    backend = "nccl" if cuda else "gloo"
    if cuda:
        if torch.cuda.device_count() <= info.local_rank:
            raise BenchError(
                f"torchrun: local rank {info.local_rank} needs GPU {info.local_rank}, "
                f"but this node has {torch.cuda.device_count()}; lower --nproc_per_node"
            )
        torch.cuda.set_device(info.local_rank)
    if not dist.is_initialized():
        dist.init_process_group(backend=backend, rank=info.rank, world_size=info.world_size)
    return DistInfo(info.rank, info.world_size, info.local_rank, backend)


def is_primary() -> bool:
    """True in the process that writes records and prints progress (rank 0, or no DDP at all)."""
    return not dist.is_initialized() or dist.get_rank() == 0


def rank_device(device: str, info: DistInfo) -> torch.device:
    """The device this rank trains on: its own GPU under DDP on CUDA, else `device` as given."""
    if info.distributed and str(device).startswith("cuda"):
        return torch.device("cuda", info.local_rank)
    return torch.device(device)


def shard_batch_size(global_batch: int, world_size: int) -> int:
    """Per-rank batch size; the global batch must split evenly so every rank's mean has equal weight."""
    if global_batch % world_size:
        raise BenchError(
            f"train.batch_size={global_batch} is not divisible by the world size {world_size} "
            f"(torchrun --nproc_per_node); use a multiple of {world_size}"
        )
    return global_batch // world_size


def local_slice(global_batch: int, info: DistInfo) -> slice:
    """This rank's contiguous share of a global batch of `global_batch` examples."""
    size = shard_batch_size(global_batch, info.world_size)
    return slice(info.rank * size, (info.rank + 1) * size)


def wrap_model(model: nn.Module, info: DistInfo) -> nn.Module:
    """DDP-wraps the model under torchrun; returns it unchanged in a single process.

    Call it again after the model's attention changes mid-run (the Treeformer bootstrap adds
    parameters), on the unwrapped module: DDP fixes its parameter set when it is built.
    """
    if not info.distributed:
        return model
    device_ids = [info.local_rank] if info.backend == "nccl" else None
    return nn.parallel.DistributedDataParallel(model, device_ids=device_ids)


def unwrap_model(model: nn.Module) -> nn.Module:
    """The bare model inside a DDP wrapper (for evaluation, FLOP counting and checkpoints)."""
    return model.module if isinstance(model, nn.parallel.DistributedDataParallel) else model


def mean_over_ranks(value: float, info: DistInfo) -> float:
    """The mean of a per-rank scalar (e.g. the shard's loss) over all ranks: the global value."""
    if not info.distributed:
        return value
    tensor = torch.tensor([value], dtype=torch.float64)
    if info.backend == "nccl":
        tensor = tensor.cuda()
    dist.all_reduce(tensor)
    return tensor.item() / info.world_size


def shutdown(info: DistInfo) -> None:
    """Leaves the process group at the end of the run (torchrun expects a clean exit)."""
    if info.distributed and dist.is_initialized():
        dist.destroy_process_group()
