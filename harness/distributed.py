"""DDP when launched by torchrun (WORLD_SIZE > 1): process group, rank facts, model wrapping.

gloo on CPU, NCCL on CUDA. The global batch stays as configured: each rank takes
batch_size / world_size examples of the same global batch (harness/data.py), and DDP averages
the gradients, so one process and N processes take the same steps.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as torch_dist
from torch import nn

from bench_common import BenchError


@dataclass(frozen=True)
class DistContext:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1


def launched_world_size() -> int:
    try:
        return int(os.environ.get("WORLD_SIZE", "1"))
    except ValueError:
        raise BenchError(f"environment WORLD_SIZE={os.environ['WORLD_SIZE']!r} is not an integer") from None


def init_distributed(device: str) -> DistContext:
    """Joins the torchrun process group once per process; a plain launch is world size 1."""
    world_size = launched_world_size()
    if world_size <= 1:
        return DistContext()
    rank, local_rank = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
    if not torch_dist.is_initialized():
        backend = "nccl" if str(device).startswith("cuda") else "gloo"
        if backend == "nccl":
            torch.cuda.set_device(local_rank)
        torch_dist.init_process_group(backend=backend)
    return DistContext(rank=rank, world_size=world_size, local_rank=local_rank)


def current() -> DistContext:
    """The context of an already joined process group (world size 1 otherwise)."""
    if not (torch_dist.is_available() and torch_dist.is_initialized()):
        return DistContext()
    return DistContext(torch_dist.get_rank(), torch_dist.get_world_size(), int(os.environ.get("LOCAL_RANK", "0")))


def barrier(dist: DistContext) -> None:
    if dist.enabled:
        torch_dist.barrier()


def wrap_ddp(model: nn.Module, device: torch.device, dist: DistContext) -> nn.Module:
    """The module to call in training: DDP over `model` when distributed, `model` itself otherwise."""
    if not dist.enabled:
        return model
    ids = [device.index if device.index is not None else dist.local_rank] if device.type == "cuda" else None
    # find_unused_parameters: cores replaced by a bootstrap swap stay registered nowhere, but a
    # method may still leave some parameters out of a step (e.g. an empty tree node).
    return nn.parallel.DistributedDataParallel(model, device_ids=ids, find_unused_parameters=True)


def all_reduce_mean(value: torch.Tensor, dist: DistContext) -> torch.Tensor:
    if not dist.enabled:
        return value
    value = value.clone()
    torch_dist.all_reduce(value)
    return value / dist.world_size
