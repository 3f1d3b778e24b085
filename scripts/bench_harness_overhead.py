#!/usr/bin/env python3
"""Harness overhead: `harness.training.loop.train` vs a bare PyTorch loop, same model, same batch size.

The harness side is the whole `train()` call (seeded batches from numpy, callbacks point, LR
schedule, loss check, clipping off, progress off, plus its one validation batch and one test
batch at the end), timed from outside; the bare side is forward, cross-entropy, backward and
AdamW on one fixed batch. Rounds alternate harness/bare so machine noise hits both alike; the
median of the per-round ratios is printed (target <= 1.10).

    python scripts/bench_harness_overhead.py [--steps 20] [--rounds 7] [--seq-len 128] [--device cpu] [--clock wall|process]
"""

from __future__ import annotations

import argparse
import copy
import statistics
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from harness.training.train_config import TrainConfig  # noqa: E402
from harness.training.model import EncoderClassifier, ModelConfig  # noqa: E402
from harness.training.loop import Splits, autocast, train  # noqa: E402


@dataclass
class Split:
    inputs: np.ndarray
    targets: np.ndarray


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


# Wall time by default; `--clock process` counts this process's CPU time instead, which a machine
# shared with other jobs disturbs far less (CPU only, and honest only with one thread).
CLOCKS = {"wall": time.perf_counter, "process": time.process_time}
clock = time.perf_counter


def time_harness(model: EncoderClassifier, splits: Splits, config: TrainConfig, device: torch.device) -> float:
    synchronize(device)
    start = clock()
    train(model, splits, config, head="sequence", seed=0, device=device, progress=False)
    synchronize(device)
    return (clock() - start) / config.steps


def time_bare(model: EncoderClassifier, inputs: torch.Tensor, targets: torch.Tensor, config: TrainConfig,
              device: torch.device) -> float:
    optimizer = torch.optim.AdamW(model.parameters(), lr=config.lr, betas=config.betas, eps=config.eps)
    model.train()
    synchronize(device)
    start = clock()
    for _ in range(config.steps):
        with autocast(device):
            logits = model(inputs)
        loss = F.cross_entropy(logits.float(), targets)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    synchronize(device)
    return (clock() - start) / config.steps


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--seq-len", type=int, default=128)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--clock", choices=sorted(CLOCKS), default="wall")
    args = parser.parse_args()
    global clock
    clock = CLOCKS[args.clock]
    device = torch.device(args.device)

    model_config = ModelConfig(vocab_size=32, num_classes=10, max_seq_len=args.seq_len, emb_dim=64, qkv_dim=64,
                               mlp_dim=128, num_layers=2, num_heads=2, dropout=0.1, attention="sdpa", pad_id=None)
    torch.manual_seed(0)
    initial = EncoderClassifier(model_config).to(device)
    rng = np.random.default_rng(0)
    size = args.batch_size * args.steps
    train_split = Split(rng.integers(0, 32, (size, args.seq_len)), rng.integers(0, 10, size))
    small = Split(train_split.inputs[: args.batch_size], train_split.targets[: args.batch_size])
    splits = Splits(train_split, small, small)
    config = TrainConfig(steps=args.steps, batch_size=args.batch_size, lr=1e-3, schedule="cosine",
                         warmup_steps=4, eval_every=args.steps, eval_batches=1)
    inputs = torch.from_numpy(train_split.inputs[: args.batch_size]).to(device)
    targets = torch.from_numpy(train_split.targets[: args.batch_size]).to(device)

    time_bare(copy.deepcopy(initial), inputs, targets, TrainConfig(steps=3), device)  # warm-up
    harness_times, bare_times = [], []
    for round_index in range(args.rounds):
        harness_times.append(time_harness(copy.deepcopy(initial), splits, config, device))
        bare_times.append(time_bare(copy.deepcopy(initial), inputs, targets, config, device))
        print(f"round {round_index}: harness {harness_times[-1] * 1e3:.2f} ms/step, "
              f"bare {bare_times[-1] * 1e3:.2f} ms/step")
    harness_ms, bare_ms = statistics.median(harness_times) * 1e3, statistics.median(bare_times) * 1e3
    # Each round's ratio compares two back-to-back measurements; their median resists load spikes.
    ratio = statistics.median(h / b for h, b in zip(harness_times, bare_times))
    print(f"clock {args.clock}, device {device}, threads {torch.get_num_threads()}, batch {args.batch_size} x n={args.seq_len}, "
          f"{args.steps} steps x {args.rounds} rounds")
    print(f"harness {harness_ms:.2f} ms/step, bare loop {bare_ms:.2f} ms/step, "
          f"median per-round ratio {ratio:.3f}x (target <= 1.10x)")


if __name__ == "__main__":
    main()
