"""Task splits (numpy, possibly memory-mapped) -> torch batches.

The training order is a pure function of (seed, step): step s takes positions [s*B, (s+1)*B) of
an endless stream made of one seeded permutation per epoch. So a run resumed at step k sees
exactly the batches an uninterrupted run sees, with no sampler state to checkpoint; and under DDP
every rank computes the same global batch and keeps its own slice of it (a distributed sampler
that needs no communication).
"""

from __future__ import annotations

from typing import Any, Iterator, Optional

import numpy as np
import torch

from bench_common import BenchError
from harness.training.distributed import DistInfo, local_slice, shard_batch_size


def check_split(name: str, split: Any, head: str) -> None:
    """Fails with one line when a split's arrays do not fit the task's head."""
    inputs, targets = np.asarray(split.inputs), np.asarray(split.targets)
    expected = 3 if head == "dual" else 2
    if inputs.ndim != expected or len(inputs) != len(targets) or len(inputs) == 0:
        raise BenchError(
            f"split '{name}': inputs {inputs.shape} and targets {targets.shape} do not fit head '{head}' "
            f"(expected {expected}-d inputs and one target per example)"
        )
    if head == "token" and targets.shape != inputs.shape:
        raise BenchError(f"split '{name}': token targets {targets.shape} must match inputs {inputs.shape}")


def to_tensors(split: Any, indices: np.ndarray, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    inputs = torch.from_numpy(np.asarray(split.inputs[indices], dtype=np.int64))
    targets = torch.from_numpy(np.asarray(split.targets[indices], dtype=np.int64))
    non_blocking = device.type == "cuda"
    return inputs.to(device, non_blocking=non_blocking), targets.to(device, non_blocking=non_blocking)


class TrainBatches:
    """Seeded training batches indexed by step; this rank's share of the global batch."""

    def __init__(self, split: Any, batch_size: int, seed: int, device: torch.device, dist: DistInfo = DistInfo()):
        shard_batch_size(batch_size, dist.world_size)  # refuses an uneven split
        self.split = split
        self.size = len(split.targets)
        self.batch_size = batch_size
        self.seed = seed
        self.device = device
        self.dist = dist
        self._permutations: dict[int, np.ndarray] = {}

    def _permutation(self, epoch: int) -> np.ndarray:
        if epoch not in self._permutations:
            if len(self._permutations) > 2:
                self._permutations.pop(min(self._permutations))
            self._permutations[epoch] = np.random.default_rng([self.seed, epoch]).permutation(self.size)
        return self._permutations[epoch]

    def indices(self, step: int) -> np.ndarray:
        """Example indices of this rank's part of global batch `step`."""
        positions = np.arange(step * self.batch_size, (step + 1) * self.batch_size)
        epochs, offsets = np.divmod(positions, self.size)
        batch = np.empty(self.batch_size, dtype=np.int64)
        for epoch in np.unique(epochs):
            chosen = epochs == epoch
            batch[chosen] = self._permutation(int(epoch))[offsets[chosen]]
        return batch[local_slice(self.batch_size, self.dist)]

    def batch(self, step: int) -> tuple[torch.Tensor, torch.Tensor]:
        return to_tensors(self.split, self.indices(step), self.device)


def eval_batches(split: Any, batch_size: int, max_batches: Optional[int],
                 device: torch.device) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """The split in order, in batches; the first `max_batches` only when given."""
    size = len(split.targets)
    count = -(-size // batch_size)
    if max_batches is not None:
        count = min(count, max_batches)
    for start in range(0, count * batch_size, batch_size):
        yield to_tensors(split, np.arange(start, min(start + batch_size, size)), device)


def one_example(split: Any, device: torch.device) -> torch.Tensor:
    """A batch of one input (FLOP counting is per example)."""
    return to_tensors(split, np.arange(1), device)[0]
