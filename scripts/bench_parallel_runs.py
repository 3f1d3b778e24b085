#!/usr/bin/env python3
"""Two one-thread training processes side by side against one two-thread process, at the quick shape.

Decides how the main job uses 2 cores (`make bench`): the quick suite's model is small (n=128,
64 wide), so a second thread may speed one run up less than a second run in parallel does. Each
repetition times `--steps` steps of the same model (scripts/bench_treeformer.py's TrainingStep)
once in this process with 2 threads and once in two spawned processes with 1 thread each, started
together; throughput is steps per second over all processes. Prints each repetition and the
median throughput ratio (parallel / one process) per method. Run it on an idle machine.

    python scripts/bench_parallel_runs.py [--methods sdpa,treeformer-tf] [--steps 20] [--repeats 3]
"""

from __future__ import annotations

import argparse
import multiprocessing
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))


def seconds_per_step(method: str, threads: int, steps: int, barrier=None) -> float:
    import torch

    from bench_treeformer import TrainingStep

    torch.set_num_threads(threads)
    step = TrainingStep(method)
    for _ in range(3):  # warm-up
        step()
    if barrier is not None:
        barrier.wait()
    start = time.perf_counter()
    for _ in range(steps):
        step()
    return (time.perf_counter() - start) / steps


def _child(method: str, steps: int, barrier, results) -> None:
    results.put(seconds_per_step(method, 1, steps, barrier))


def parallel_seconds_per_step(method: str, steps: int, workers: int = 2) -> list[float]:
    context = multiprocessing.get_context("spawn")
    barrier, results = context.Barrier(workers), context.Queue()
    children = [context.Process(target=_child, args=(method, steps, barrier, results)) for _ in range(workers)]
    for child in children:
        child.start()
    times = [results.get() for _ in children]
    for child in children:
        child.join()
    return times


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--methods", default="sdpa,treeformer-tf")
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args(argv)
    for method in args.methods.split(","):
        ratios = []
        for repetition in range(args.repeats):
            one = seconds_per_step(method, 2, args.steps)
            both = parallel_seconds_per_step(method, args.steps)
            ratio = sum(1 / t for t in both) / (1 / one)
            ratios.append(ratio)
            print(f"{method} repetition {repetition + 1}: one process, 2 threads {one * 1e3:.0f} ms/step; "
                  f"two processes, 1 thread each {', '.join(f'{t * 1e3:.0f}' for t in both)} ms/step; "
                  f"throughput ratio {ratio:.2f}", flush=True)
        print(f"{method}: median throughput of two 1-thread processes / one 2-thread process "
              f"{statistics.median(ratios):.2f} (range {min(ratios):.2f}-{max(ratios):.2f})", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
