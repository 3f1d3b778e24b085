"""Generation rates of the offline tasks: `python -m lra.bench_generation [--images N] [--trees N]`.

Prints wall time and images (trees) per second for Pathfinder 32x32 (each difficulty, written in
the official layout by parallel processes) and ListOps, plus the CPU load, since the rates depend
on what else runs on the machine.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

from lra.listops import generate_examples
from lra.pathfinder import generate_layout, preset


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=10_000)
    parser.add_argument("--trees", type=int, default=3_000)
    parser.add_argument("--workers", type=int, default=os.cpu_count())
    parser.add_argument("--difficulties", default="easy,intermediate,hard")
    args = parser.parse_args()
    print(f"cpus={os.cpu_count()} workers={args.workers} load_average={os.getloadavg()[0]:.1f}")
    for difficulty in args.difficulties.split(","):
        with tempfile.TemporaryDirectory() as root:
            start = time.perf_counter()
            generate_layout(Path(root), preset(32, difficulty), args.images, seed=0, workers=args.workers)
            seconds = time.perf_counter() - start
        print(f"pathfinder32 {difficulty:<12} {args.images} images in {seconds:6.1f} s = {args.images / seconds:7.1f} images/s")
    for low, high in ((500, 1000), (500, 2000)):
        start = time.perf_counter()
        generate_examples(args.trees, seed=0, min_length=low, max_length=high)
        seconds = time.perf_counter() - start
        print(f"listops {low}<len<{high}: {args.trees} trees in {seconds:6.1f} s = {args.trees / seconds:7.1f} trees/s (one process)")
    print(f"load_average_after={os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
