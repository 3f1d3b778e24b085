"""Times TC's implementations against each other; writes the table `implementation="auto"` uses.

One TC core (B=1, 4 heads, head_dim 64, fp32, train mode), forward + backward, on this machine's
CPU (or `--device cuda`). Interleaved: every repetition times each implementation once ("all-nodes",
"path", and "fused-path" where its kernels build: CPU only), in rotating order, and takes each one's
ratio to all-nodes in that repetition; the ranking is by median ratio (range beside it). On the CPU the verdict uses the process's CPU time (both threads
summed), not wall time: on a machine shared with other jobs, wall time mostly measures waiting
for a core (we saw 100x inflated and contradictory wall times at a load average of 10 on 2 cores).
One thread by default: with two, waiting OpenMP threads spin and inflate CPU time as well; so
CPU time counts the work, not how well it spreads over threads. Wall times are reported beside. Also the forward alone without gradient (evaluation), reported but not used for
the choice: training time dominates.

Writes results/treeformer_speed/tc_implementations.{json,md} (all figures) and
methods/treeformer/tc_measured.py (the implementations per (n, h), fastest first, for this device
type, beside any other device's rows already there; a module, so it ships with the package).

    python scripts/measure_tc_implementations.py                   # the default grid, 1 thread
    python scripts/measure_tc_implementations.py --lengths 1024 --heights 4 6 --repeats 3
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

from harness.measure.env import cpu_model  # noqa: E402
from methods import create_attention  # noqa: E402
from methods.treeformer import kernels, tc_measured  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
HEADS, HEAD_DIM = 4, 64
BASELINE = "all-nodes"  # the ratios' denominator


def seconds(fn, device: str) -> tuple[float, float]:
    """(wall, CPU) seconds of one call; on CUDA both are wall time after synchronising."""
    if device == "cuda":
        torch.cuda.synchronize()
    wall, cpu = time.perf_counter(), time.process_time()
    fn()
    if device == "cuda":
        torch.cuda.synchronize()
        elapsed = time.perf_counter() - wall
        return elapsed, elapsed
    return time.perf_counter() - wall, time.process_time() - cpu


def summary(times: list[float], baseline: list[float]) -> dict:
    ratios = [t / b for t, b in zip(times, baseline)]
    return {"ms": 1e3 * statistics.median(times), "ratio_median": statistics.median(ratios),
            "ratio_min": min(ratios), "ratio_max": max(ratios)}


def measure(n: int, height: int, repeats: int, device: str, implementations: tuple[str, ...]) -> dict:
    cores, steps = {}, {}
    generator = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(1, HEADS, n, HEAD_DIM, generator=generator).to(device).requires_grad_() for _ in range(3))
    for name in implementations:
        torch.manual_seed(0)
        core = create_attention(
            "treeformer-tc", num_heads=HEADS, head_dim=HEAD_DIM, max_seq_len=n, height=height, implementation=name
        ).to(device)
        cores[name] = core

        def train_step(core=core):
            core(q, k, v).square().sum().backward()

        def eval_step(core=core):
            with torch.no_grad():
                core(q, k, v)

        steps[name] = {"train": train_step, "eval": eval_step}
        train_step()  # warm-up
        eval_step()
    times = {(name, mode): [] for name in implementations for mode in ("train", "eval")}
    for repetition in range(repeats):
        shift = repetition % len(implementations)
        order = implementations[shift:] + implementations[:shift]
        for mode in ("train", "eval"):
            for name in order:
                times[name, mode].append(seconds(steps[name][mode], device))
    row = {"seq_len": n, "height": height}
    for name in implementations:
        row[name] = {
            f"{mode}_{clock}": summary([t[index] for t in times[name, mode]], [t[index] for t in times[BASELINE, mode]])
            for mode in ("train", "eval") for clock, index in (("cpu", 1), ("wall", 0))
        }
        row[name]["macs"] = cores[name].macs(n)
    row["ranking"] = sorted(implementations, key=lambda name: row[name]["train_cpu"]["ratio_median"])
    return row


def describe_machine(device: str) -> str:
    if device == "cuda":
        return torch.cuda.get_device_name()
    return f"{cpu_model(platform.processor() or platform.machine())}, {os.cpu_count()} cores"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--lengths", type=int, nargs="+", default=[128, 256, 1024, 4096, 8192])
    parser.add_argument("--heights", type=int, nargs="+", default=[2, 4, 6, 8, 10])
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--threads", type=int, default=1, help="1: CPU time then counts work, not spinning threads")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--max-scores", type=int, default=2**22,
                        help="skip points with n * 2^h above this (all-nodes' score matrix per head takes seconds)")
    parser.add_argument("--note", default="", help="e.g. whether the machine was shared while measuring")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    implementations = ("all-nodes", "path") + (("fused-path",) if kernels.run_on(args.device) else ())
    load = os.getloadavg()
    commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True).stdout.strip()
    meta = {
        "device": args.device,
        "machine": describe_machine(args.device),
        "threads": args.threads,
        "torch": torch.__version__,
        "commit": commit,
        "time": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "load_average_at_start": [round(x, 2) for x in load],
        "repeats": args.repeats,
        "note": args.note,
        "command": "python scripts/measure_tc_implementations.py " + " ".join(sys.argv[1:]),
    }
    rows = []
    for n in args.lengths:
        for height in args.heights:
            if 2**height > n or n * 2**height > args.max_scores:
                continue
            row = measure(n, height, args.repeats, args.device, implementations)
            rows.append(row)
            times = ", ".join(f"{name} {row[name]['train_cpu']['ms']:.2f} ms" for name in implementations)
            print(f"n={n:5d} h={height:2d}: fwd+bwd CPU time {times} -> {' > '.join(row['ranking'])}", flush=True)
            write(meta, rows)  # after every point: a long grid cut short keeps what it measured


def write(meta: dict, rows: list[dict]) -> None:
    """The figures under results/, and the (n, h) -> ranking table for this device beside tc_choice."""
    out = ROOT / "results" / "treeformer_speed"
    out.mkdir(parents=True, exist_ok=True)
    (out / "tc_implementations.json").write_text(json.dumps({"meta": meta, "rows": rows}, indent=1) + "\n")
    (out / "tc_implementations.md").write_text(render(meta, rows))
    table_path = ROOT / "methods" / "treeformer" / "tc_measured.py"
    ranking, measured = dict(tc_measured.RANKING), dict(tc_measured.MEASURED)  # other devices' rows stay
    ranking[meta["device"]] = [(row["seq_len"], row["height"], tuple(row["ranking"])) for row in rows]
    measured[meta["device"]] = {key: meta[key] for key in ("machine", "threads", "commit", "time", "note")}
    measured[meta["device"]]["source"] = "results/treeformer_speed/tc_implementations.md"
    lines = [
        '"""TC\'s implementations per device type and (n, h), fastest first: read by `tc_choice`.',
        "",
        "Written by scripts/measure_tc_implementations.py from the measurements in",
        'results/treeformer_speed/tc_implementations.md; rerun the script rather than editing this file."""',
        "",
        "RANKING = {  # device type: [(seq_len, height, (fastest, ..., slowest)), ...]",
        *(line for device, rows_ in sorted(ranking.items())
          for line in (f"    {device!r}: [", *(f"        {tuple(row)!r}," for row in rows_), "    ],")),
        "}",
        "MEASURED = {",
        *(f"    {device!r}: {about!r}," for device, about in sorted(measured.items())),
        "}",
    ]
    table_path.write_text("\n".join(lines) + "\n")


def render(meta: dict, rows: list[dict]) -> str:
    implementations = [name for name in ("all-nodes", "path", "fused-path") if rows and name in rows[0]]
    header = " | ".join(f"{name} ms" for name in implementations)
    ratios = " | ".join(f"{name} / all-nodes" for name in implementations[1:])
    evaluation = " | ".join(f"eval {name} / all-nodes" for name in implementations[1:])
    macs = " | ".join(f"MACs {name}" for name in implementations)
    columns = 1 + 2 * len(implementations) + 2 * (len(implementations) - 1) + 2
    lines = [
        "# TC implementations against each other (fwd+bwd)",
        "",
        f"Machine: {meta['machine']}; device {meta['device']}; threads {meta['threads']}; torch {meta['torch']}; "
        f"commit {meta['commit']}; {meta['time']}; load average at start {meta['load_average_at_start']}. {meta['note']}",
        "",
        f"Command: `{meta['command']}`",
        "",
        "B=1, 4 heads, head_dim 64, fp32, the core alone (no projections). Times: medians over "
        f"{meta['repeats']} interleaved repetitions of the process's CPU time (all its threads, "
        f"{meta['threads']} here; on a shared machine wall time mostly measures waiting); ratios: median of per-repetition "
        "ratios to all-nodes (range in brackets), fwd+bwd CPU time, then the evaluation forward alone. The ranking "
        "(fastest first, by the fwd+bwd ratio) is what `implementation=\"auto\"` reads "
        "(methods/treeformer/tc_measured.py). MACs: `macs()`, evaluation forward, per example.",
        "",
        f"| n | h | {header} | {ratios} | {evaluation} | {macs} | ranking |",
        "|" + "--:|" * (columns - 1) + "---|",
    ]

    def ratio(figures: dict) -> str:
        return f"{figures['ratio_median']:.2f} [{figures['ratio_min']:.2f}-{figures['ratio_max']:.2f}]"

    for row in rows:
        cells = [str(row["seq_len"]), str(row["height"])]
        cells += [f"{row[name]['train_cpu']['ms']:.2f}" for name in implementations]
        cells += [ratio(row[name]["train_cpu"]) for name in implementations[1:]]
        cells += [ratio(row[name]["eval_cpu"]) for name in implementations[1:]]
        cells += [f"{row[name]['macs'] / 1e6:.1f} M" for name in implementations]
        cells.append(" > ".join(row["ranking"]))
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
