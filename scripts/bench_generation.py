"""Generation rates of the offline tasks: `python scripts/bench_generation.py [--images N] [--trees N]`.

Prints wall time and images (trees) per second for Pathfinder 32x32 (each difficulty, written in
the official layout by parallel processes) and ListOps, plus the CPU load, since the rates depend
on what else runs on the machine. `--single N` first times N images per difficulty in this one
process (CPU ms per image, the figure least disturbed by other load); `--baseline REV` times the
generator of git revision REV the same way, interleaved with the current one, and prints the ratio.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from types import ModuleType
from typing import Callable

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402

from lra import snakes  # noqa: E402
from lra.listops import generate_examples  # noqa: E402
from lra.pathfinder import generate_layout, preset  # noqa: E402

Generator = Callable[[snakes.SnakeParams, np.random.Generator, int], list]


def _load_revision(revision: str) -> ModuleType:
    """lra/snakes.py as it was at git `revision`, imported under another name."""
    source = subprocess.run(
        ["git", "show", f"{revision}:lra/snakes.py"], cwd=ROOT, check=True, capture_output=True, text=True
    ).stdout
    path = Path(tempfile.mkdtemp()) / "snakes_baseline.py"
    path.write_text(source)
    spec = importlib.util.spec_from_file_location("snakes_baseline", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


def _batch_generator(module: ModuleType) -> Generator:
    """The module's many-images entry point (older revisions only had one image per call)."""
    if hasattr(module, "generate_samples"):
        return module.generate_samples
    return lambda params, rng, count: [module.generate_sample(params, rng) for _ in range(count)]


def _cpu_ms_per_image(generate: Generator, difficulty: str, count: int, seed: int) -> float:
    params = preset(32, difficulty)
    start = time.process_time()
    generate(params, np.random.default_rng(seed), count)
    return (time.process_time() - start) / count * 1e3


def single_process(count: int, difficulties: list[str], baseline: str | None, repeats: int = 3) -> None:
    """CPU ms per image in this process, current (and baseline) interleaved `repeats` times."""
    contenders = {"current": _batch_generator(snakes)}
    if baseline:
        contenders[f"baseline {baseline}"] = _batch_generator(_load_revision(baseline))
    for difficulty in difficulties:
        for generate in contenders.values():
            generate(preset(32, difficulty), np.random.default_rng(0), 5)  # build the per-preset tables
        totals = dict.fromkeys(contenders, 0.0)
        for repeat in range(repeats):
            for name, generate in contenders.items():
                totals[name] += _cpu_ms_per_image(generate, difficulty, count, seed=100 + repeat)
        figures = {name: total / repeats for name, total in totals.items()}
        line = "  ".join(f"{name} {ms:6.2f} ms/image" for name, ms in figures.items())
        if baseline:
            line += f"  ratio baseline/current {figures[f'baseline {baseline}'] / figures['current']:4.2f}"
        print(f"pathfinder32 {difficulty:<12} one process, CPU time: {line}", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=10_000, help="images per difficulty, parallel layout run (0: skip)")
    parser.add_argument("--trees", type=int, default=3_000, help="ListOps trees (0: skip)")
    parser.add_argument("--workers", type=int, default=os.cpu_count())
    parser.add_argument("--difficulties", default="easy,intermediate,hard")
    parser.add_argument("--single", type=int, default=0, help="images per difficulty timed in this process")
    parser.add_argument("--baseline", help="git revision whose lra/snakes.py is timed beside the current one")
    args = parser.parse_args()
    difficulties = args.difficulties.split(",")
    print(f"cpus={os.cpu_count()} workers={args.workers} load_average={os.getloadavg()[0]:.1f}")
    if args.single:
        single_process(args.single, difficulties, args.baseline)
    for difficulty in difficulties if args.images else []:
        with tempfile.TemporaryDirectory() as root:
            start = time.perf_counter()
            generate_layout(Path(root), preset(32, difficulty), args.images, seed=0, workers=args.workers)
            seconds = time.perf_counter() - start
        print(f"pathfinder32 {difficulty:<12} {args.images} images in {seconds:6.1f} s = {args.images / seconds:7.1f} images/s")
    for low, high in ((500, 1000), (500, 2000)) if args.trees else ():
        start = time.perf_counter()
        generate_examples(args.trees, seed=0, min_length=low, max_length=high)
        seconds = time.perf_counter() - start
        print(f"listops {low}<len<{high}: {args.trees} trees in {seconds:6.1f} s = {args.trees / seconds:7.1f} trees/s (one process)")
    print(f"load_average_after={os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
