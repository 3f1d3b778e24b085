"""What `train.compile=on` gives each method: compile seconds, step time, and whether it pays.

For each method, two copies of one model (same seed) are built: one called eagerly, one through
`harness.training.compiling.Compilation`, the path a run takes with `train.compile=on`. Measured:

1. Compile seconds, cold (an empty inductor cache: generating and building the C++) and warm
   (in-memory state reset, the disk cache of the cold compile kept: what the second run of a
   sweep pays), as torch's compile callbacks count them, over the first forward and backward.
2. Step time eager and compiled, paired: the two copies alternate within each repetition and
   every compiled time is divided by the eager time of the same repetition; the median ratio with
   a distribution-free 95% interval over at least 9 repetitions.
3. What that means for a run: the steps after which compiling has paid for itself (warm compile
   seconds / time saved per step, the saving being the eager median times one minus the paired
   ratio), against the quick suite's 400-step recall runs.

Two shapes: the whole training step at the quick suite's shape (n=128, batch 32, AdamW; the step
of scripts/bench_treeformer.py) and one attention layer forward + backward at n=4096 (4 heads x
64, batch 1). One torch thread by default, as the quick suite's runs use.

    python scripts/bench_compile.py                   # everything: results/compile_speed/compile_threads1.*
    python scripts/bench_compile.py --quick           # smoke check, sdpa and TC at n=128 only; writes nothing

Timings are valid only on an otherwise idle machine: the load average is printed at start and end.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import torch  # noqa: E402
from torch import nn  # noqa: E402

from bench_treeformer import (WIDTH, RegistryLayer, TrainingStep, environment, forward_backward,  # noqa: E402
                             median_interval, write_results)
from harness.report.speed_tables import compile_report  # noqa: E402
from harness.training.compiling import INDUCTOR_CACHE_ENV, Compilation  # noqa: E402

METHODS = ("sdpa", "linformer", "performer", "treeformer-tf", "treeformer-tc")
QUICK_RUN_STEPS = 400  # the quick suite's recall runs (ListOps: 200)
LAYER_LENGTH = 4096
MIN_REPEATS = 9


@dataclass
class Result:
    method: str
    shape: str
    cold_compile_s: Optional[float] = None
    warm_compile_s: Optional[float] = None
    eager_ms: list[float] = field(default_factory=list)
    compiled_ms: list[float] = field(default_factory=list)
    ratios: list[float] = field(default_factory=list)
    status: str = "ok"
    reason: Optional[str] = None


class LayerStep:
    """One attention layer, forward + backward on a fixed input (the weights are not updated)."""

    def __init__(self, attention: str, seq_len: int = LAYER_LENGTH):
        torch.manual_seed(0)
        self.model = RegistryLayer(attention, seq_len)
        self.net: nn.Module = self.model
        generator = torch.Generator().manual_seed(0)
        self.x = torch.randn(1, seq_len, WIDTH, generator=generator, requires_grad=True)
        self.grad = torch.randn(1, seq_len, WIDTH, generator=generator)

    def __call__(self) -> None:
        forward_backward(self.net, self.x, self.grad)


SHAPES: dict[str, Callable[[str], object]] = {
    "training step n=128": TrainingStep,  # bench_treeformer's step, which calls `net`
    f"layer fwd+bwd n={LAYER_LENGTH}": LayerStep,
}


def compile_seconds(step, cache_dir: Path) -> float:
    """Compiles `step.model` as a run does and runs two steps (forward, then backward compiled at the
    first backward); the seconds torch's compile callbacks counted."""
    os.environ[INDUCTOR_CACHE_ENV] = str(cache_dir)
    compilation = Compilation("on")
    try:
        step.net = compilation.wrap(step.model)
        for _ in range(2):
            step()
    finally:
        compilation.close()
    return compilation.seconds


def measure(method: str, shape: str, repeats: int, steps_per_repeat: int, cache_root: Path) -> Result:
    result = Result(method, shape)
    build = SHAPES[shape]
    try:
        eager, compiled = build(method), build(method)
        cache_dir = cache_root / f"{method}-{shape.split()[0]}"
        result.cold_compile_s = compile_seconds(compiled, cache_dir)
        result.warm_compile_s = compile_seconds(compiled, cache_dir)  # reset in memory, cache on disk
        for _ in range(2):
            eager()
    except Exception as error:  # becomes a row, never a dropped one
        result.status, result.reason = "error", f"{type(error).__name__}: {error}"
        return result
    for repetition in range(repeats):
        pair = [("eager", eager), ("compiled", compiled)]
        times = {}
        for label, step in (pair if repetition % 2 == 0 else pair[::-1]):
            start = time.perf_counter()
            for _ in range(steps_per_repeat):
                step()
            times[label] = (time.perf_counter() - start) / steps_per_repeat * 1e3
        result.eager_ms.append(times["eager"])
        result.compiled_ms.append(times["compiled"])
        result.ratios.append(times["compiled"] / times["eager"])
    print(f"{method} {shape}: compile cold {result.cold_compile_s:.1f}s warm {result.warm_compile_s:.1f}s; "
          f"eager {statistics.median(result.eager_ms):.1f} ms, compiled {statistics.median(result.compiled_ms):.1f} ms",
          flush=True)
    return result


def summarise(result: Result) -> dict:
    """The row: medians, the paired ratio's interval, and the payoff of compiling. The time a step
    saves is the eager median times (1 - paired ratio), so its sign always agrees with the ratio's;
    the per-repetition times are kept in the row."""
    entry = {"method": result.method, "shape": result.shape, "status": result.status, "reason": result.reason,
             "cold_compile_s": result.cold_compile_s, "warm_compile_s": result.warm_compile_s,
             "eager_ms": None, "compiled_ms": None, "ratio": None, "ratio_ci95": None, "pairs": len(result.ratios),
             "break_even_steps": None, "net_saving_s": None,
             "eager_ms_each": result.eager_ms, "compiled_ms_each": result.compiled_ms}
    if not result.ratios:
        return entry
    eager, ratio = statistics.median(result.eager_ms), statistics.median(result.ratios)
    saved_ms = eager * (1.0 - ratio)
    entry.update(eager_ms=eager, compiled_ms=statistics.median(result.compiled_ms), ratio=ratio,
                 ratio_ci95=median_interval(result.ratios))
    entry["break_even_steps"] = result.warm_compile_s * 1e3 / saved_ms if saved_ms > 0 else None
    entry["net_saving_s"] = QUICK_RUN_STEPS * saved_ms / 1e3 - result.warm_compile_s
    return entry


def main(argv: Optional[list[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--methods", nargs="*", default=list(METHODS))
    parser.add_argument("--repeats", type=int, default=MIN_REPEATS,
                        help=f"paired repetitions per method and shape, at least {MIN_REPEATS}")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--no-layer", dest="layer", action="store_false", help=f"skip the layer at n={LAYER_LENGTH}")
    parser.add_argument("--quick", action="store_true", help="smoke check: sdpa and TC at n=128, 3 repetitions; writes only with --out")
    parser.add_argument("--out", type=Path, default=None, help="results folder (default results/compile_speed)")
    args = parser.parse_args(argv)
    if args.quick:
        args.repeats, args.layer, args.methods = 3, False, ["sdpa", "treeformer-tc"]
    elif args.repeats < MIN_REPEATS:
        parser.error(f"--repeats must be at least {MIN_REPEATS} (the median's 95% interval needs them), got {args.repeats}")
    out = args.out if args.out is not None or args.quick else Path("results/compile_speed")
    torch.set_num_threads(args.threads)
    command = "python " + " ".join([sys.argv[0]] + (argv if argv is not None else sys.argv[1:]))
    env = environment(command, args.threads)
    shapes = list(SHAPES) if args.layer else list(SHAPES)[:1]
    rows = []
    with tempfile.TemporaryDirectory(prefix="bench-compile-") as cache_root:
        for shape in shapes:
            steps_per_repeat = 3 if shape.startswith("training") else 1
            for method in args.methods:
                rows.append(summarise(measure(method, shape, args.repeats, steps_per_repeat, Path(cache_root))))
    env["load_average_end"] = list(os.getloadavg())
    payload = {"env": env, "steps_per_run": QUICK_RUN_STEPS, "rows": rows}
    text = "# What train.compile=on gives each method (CPU)\n\n" + compile_report(payload)
    print(text)
    if out is not None:
        write_results(out, f"compile_threads{args.threads}", payload, text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
