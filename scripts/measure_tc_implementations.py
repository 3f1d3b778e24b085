"""Times TC's two implementations against each other; writes the table `implementation="auto"` uses.

One TC core (B=1, 4 heads, head_dim 64, fp32, train mode), forward + backward, on this machine's
CPU (or `--device cuda`). Interleaved: every repetition times "all-nodes" and "path" once each, in
alternating order, and takes the ratio path / all-nodes of that repetition; the verdict is the
median ratio (range beside it). On the CPU the verdict uses the process's CPU time (both threads
summed), not wall time: on a machine shared with other jobs, wall time mostly measures waiting
for a core (we saw 100x inflated and contradictory wall times at a load average of 10 on 2 cores).
One thread by default: with two, waiting OpenMP threads spin and inflate CPU time as well; so
CPU time counts the work, not how well it spreads over threads. Wall times are reported beside. Also the forward alone without gradient (evaluation), reported but not used for
the choice: training time dominates.

Writes results/treeformer_speed/tc_implementations.{json,md} (all figures) and
methods/treeformer/tc_measured.py (the faster implementation per (n, h), for this device type,
beside any other device's rows already there; a module, so it ships with the package).

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
from methods.treeformer import tc_measured  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
HEADS, HEAD_DIM = 4, 64
IMPLEMENTATIONS = ("all-nodes", "path")


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


def summary(path: list[float], all_nodes: list[float]) -> dict:
    ratios = [p / a for p, a in zip(path, all_nodes)]
    return {
        "all_nodes_ms": 1e3 * statistics.median(all_nodes),
        "path_ms": 1e3 * statistics.median(path),
        "ratio_median": statistics.median(ratios),
        "ratio_min": min(ratios),
        "ratio_max": max(ratios),
    }


def measure(n: int, height: int, repeats: int, device: str) -> dict:
    cores, steps = {}, {}
    generator = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(1, HEADS, n, HEAD_DIM, generator=generator).to(device).requires_grad_() for _ in range(3))
    for name in IMPLEMENTATIONS:
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
    times = {(name, mode): [] for name in IMPLEMENTATIONS for mode in ("train", "eval")}
    for repetition in range(repeats):
        order = IMPLEMENTATIONS if repetition % 2 == 0 else IMPLEMENTATIONS[::-1]
        for mode in ("train", "eval"):
            for name in order:
                times[name, mode].append(seconds(steps[name][mode], device))
    row = {"seq_len": n, "height": height}
    for mode in ("train", "eval"):
        for clock, index in (("cpu", 1), ("wall", 0)):
            path = [t[index] for t in times["path", mode]]
            all_nodes = [t[index] for t in times["all-nodes", mode]]
            row[f"{mode}_{clock}"] = summary(path, all_nodes)
    row["faster"] = "path" if row["train_cpu"]["ratio_median"] < 1.0 else "all-nodes"
    row["macs"] = {name: cores[name].macs(n) for name in IMPLEMENTATIONS}
    return row


def describe_machine(device: str) -> str:
    if device == "cuda":
        return torch.cuda.get_device_name()
    return f"{cpu_model(platform.processor() or platform.machine())}, {os.cpu_count()} cores"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--lengths", type=int, nargs="+", default=[256, 1024, 4096, 8192])
    parser.add_argument("--heights", type=int, nargs="+", default=[2, 4, 6, 8, 10])
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--threads", type=int, default=1, help="1: CPU time then counts work, not spinning threads")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--max-scores", type=int, default=2**22,
                        help="skip points with n * 2^h above this (all-nodes' score matrix per head takes seconds)")
    parser.add_argument("--note", default="", help="e.g. whether the machine was shared while measuring")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
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
            row = measure(n, height, args.repeats, args.device)
            rows.append(row)
            train = row["train_cpu"]
            print(f"n={n:5d} h={height:2d}: CPU time all-nodes {train['all_nodes_ms']:8.2f} ms, path {train['path_ms']:8.2f} ms, "
                  f"path/all-nodes {train['ratio_median']:.2f} [{train['ratio_min']:.2f}-{train['ratio_max']:.2f}] -> {row['faster']}",
                  flush=True)
            write(meta, rows)  # after every point: a long grid cut short keeps what it measured


def write(meta: dict, rows: list[dict]) -> None:
    """The figures under results/, and the (n, h) -> faster table for this device beside tc_choice."""
    out = ROOT / "results" / "treeformer_speed"
    out.mkdir(parents=True, exist_ok=True)
    (out / "tc_implementations.json").write_text(json.dumps({"meta": meta, "rows": rows}, indent=1) + "\n")
    (out / "tc_implementations.md").write_text(render(meta, rows))
    table_path = ROOT / "methods" / "treeformer" / "tc_measured.py"
    faster, measured = dict(tc_measured.FASTER), dict(tc_measured.MEASURED)  # other devices' rows stay
    faster[meta["device"]] = [(row["seq_len"], row["height"], row["faster"]) for row in rows]
    measured[meta["device"]] = {key: meta[key] for key in ("machine", "threads", "commit", "time", "note")}
    measured[meta["device"]]["source"] = "results/treeformer_speed/tc_implementations.md"
    lines = [
        '"""Which TC implementation was faster, per device type and (n, h): read by `tc_choice`.',
        "",
        "Written by scripts/measure_tc_implementations.py from the measurements in",
        'results/treeformer_speed/tc_implementations.md; rerun the script rather than editing this file."""',
        "",
        "FASTER = {  # device type: [(seq_len, height, faster), ...]",
        *(line for device, rows_ in sorted(faster.items())
          for line in (f"    {device!r}: [", *(f"        {tuple(row)!r}," for row in rows_), "    ],")),
        "}",
        "MEASURED = {",
        *(f"    {device!r}: {about!r}," for device, about in sorted(measured.items())),
        "}",
    ]
    table_path.write_text("\n".join(lines) + "\n")


def render(meta: dict, rows: list[dict]) -> str:
    lines = [
        "# TC implementations: \"all-nodes\" against \"path\" (one core, fwd+bwd)",
        "",
        f"Machine: {meta['machine']}; device {meta['device']}; threads {meta['threads']}; torch {meta['torch']}; "
        f"commit {meta['commit']}; {meta['time']}; load average at start {meta['load_average_at_start']}. {meta['note']}",
        "",
        f"Command: `{meta['command']}`",
        "",
        "B=1, 4 heads, head_dim 64, fp32, the core alone (no projections). Times: medians over "
        f"{meta['repeats']} interleaved repetitions of the process's CPU time (all its threads, "
        f"{meta['threads']} here; on a shared machine wall time mostly measures waiting); ratios: median of per-repetition "
        "path / all-nodes (range in brackets), CPU time, with the wall-time ratio beside. `faster` "
        "(by fwd+bwd CPU time) is what `implementation=\"auto\"` runs "
        "(methods/treeformer/tc_measured.py). MACs: `macs()`, evaluation forward, per example.",
        "",
        "| n | h | fwd+bwd CPU ms all-nodes | fwd+bwd CPU ms path | path / all-nodes (CPU) | (wall) | eval fwd path / all-nodes (CPU) | MACs all-nodes | MACs path | faster |",
        "|--:|--:|--:|--:|--:|--:|--:|--:|--:|---|",
    ]
    for row in rows:
        train, wall, evaluation = row["train_cpu"], row["train_wall"], row["eval_cpu"]
        lines.append(
            f"| {row['seq_len']} | {row['height']} | {train['all_nodes_ms']:.2f} | {train['path_ms']:.2f} | "
            f"{train['ratio_median']:.2f} [{train['ratio_min']:.2f}-{train['ratio_max']:.2f}] | "
            f"{wall['ratio_median']:.2f} [{wall['ratio_min']:.2f}-{wall['ratio_max']:.2f}] | "
            f"{evaluation['ratio_median']:.2f} [{evaluation['ratio_min']:.2f}-{evaluation['ratio_max']:.2f}] | "
            f"{row['macs']['all-nodes'] / 1e6:.1f} M | {row['macs']['path'] / 1e6:.1f} M | {row['faster']} |"
        )
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
