"""Calibrates a suite's task settings: full attention at 1x, 2x and 4x the suite's steps, and steps/s per method.

Why: a suite only separates methods if its reference (full attention) clearly learns each task within
the budget: well above the test split's majority class, stable over seeds, near its own plateau. This
script runs the reference through the ordinary CLI (`run_benchmark.py run`) at multiples of the
budget, reads the records back, computes the majority-class baseline from the test split itself and
writes a summary. Runs use one torch thread (OMP_NUM_THREADS=1): results are deterministic per seed
and thread count; wall times on a shared machine are inflated.

    python scripts/calibrate.py run --suite quick --tasks mqar-few-keys --multipliers 1,2,4 --seeds 0,1,2 \
        --out results/calibration/quick [--set data.seq_len=128 ...]
    python scripts/calibrate.py speed --suite quick --tasks mqar-few-keys --steps 40 --out results/calibration/quick/speed
    python scripts/calibrate.py summarize results/calibration/quick [...]

`run` writes <out>/x<m>/records/<task>/<method>/seed<k>.json (the CLI's records; checkpoints are
deleted by the harness when a run finishes) and <out>/calibration.json (figures per multiplier).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Optional

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from lra.task import IGNORE_INDEX  # noqa: E402

CLI = ROOT / "run_benchmark.py"
DEFAULT_DATA = Path(os.environ.get("TREEFORMER_BENCH_DATA", "/tmp/calib-data"))
EVALS_PER_RUN = 10  # the history a record keeps: the plateau is read from it


def one_thread_env() -> dict[str, str]:
    env = dict(os.environ)
    env.update(OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", PYTHONHASHSEED="0")
    return env


def resolved_config(suite: str, task: str, method: str, sets: list[str], data_dir: Path) -> dict[str, Any]:
    """The config the CLI would run (same resolution code), to read the suite's base steps."""
    from harness.sweep.driver import SweepRequest, resolve_specs

    spec, = resolve_specs(SweepRequest(suite=suite, tasks=[task], methods=[method], seeds=[0], sets=sets,
                                       data_dir=data_dir, out=Path("/nonexistent")))
    return spec.config


def majority_baseline(task: str, data: dict[str, Any], data_dir: Path) -> dict[str, float]:
    """Share of the most frequent class over the test split's scored targets, and 1/num_classes."""
    import numpy as np

    from lra import get_task

    task_obj = get_task(task)
    targets = np.asarray(task_obj.prepare(data_dir, dict(data))["test"].targets).ravel()
    scored = targets[targets != IGNORE_INDEX]
    counts = np.bincount(scored)
    num_classes = task_obj.model_config("uniform", dict(data))["num_classes"]
    return {"majority": float(counts.max() / scored.size), "chance": 1.0 / num_classes, "scored": int(scored.size)}


def cli(args: list[str], log: Path) -> float:
    """Runs the CLI with one thread, its output appended to `log`; returns the wall seconds."""
    start = time.perf_counter()
    with open(log, "a") as out:
        status = subprocess.run([sys.executable, str(CLI), *args], cwd=ROOT, env=one_thread_env(),
                                stdout=out, stderr=subprocess.STDOUT).returncode
    if status == 1:  # some run failed or hit train.time_limit_s: its record says which, keep going
        print(f"calibrate: some runs did not finish ok (see {log} and their records' status)", flush=True)
    elif status != 0:
        raise SystemExit(f"calibrate: `run_benchmark.py {' '.join(args)}` exited {status}; see {log}")
    return time.perf_counter() - start


def read_records(directory: Path) -> list[dict[str, Any]]:
    return [json.loads(p.read_text()) for p in sorted(directory.glob("records/*/*/seed*.json"))]


def stats(values: list[float]) -> dict[str, Optional[float]]:
    return {"mean": statistics.fmean(values), "std": statistics.stdev(values) if len(values) > 1 else None,
            "values": values}


def cmd_run(args: argparse.Namespace) -> None:
    out: Path = args.out
    out.mkdir(parents=True, exist_ok=True)
    log = out / "log.txt"
    path = out / "calibration.json"
    summary: dict[str, Any] = {"suite": args.suite, "method": args.method, "sets": args.set, "threads": 1, "tasks": {}}
    if path.is_file():  # more multipliers or seeds for the same candidate: merge
        summary = json.loads(path.read_text())
        if (summary["suite"], summary["method"], summary["sets"]) != (args.suite, args.method, args.set):
            raise SystemExit(f"calibrate: {path} holds another candidate ({summary['sets']}); choose another --out")
    for task in args.tasks:
        base = resolved_config(args.suite, task, args.method, args.set, args.data_dir)
        base_steps = base["train"]["steps"]
        entry: dict[str, Any] = {"data": base["data"], "model": base["model"], "train": base["train"],
                                 "baseline": majority_baseline(task, base["data"], args.data_dir),
                                 "runs": summary["tasks"].get(task, {}).get("runs", {})}
        for multiplier in args.multipliers:
            steps = base_steps * multiplier
            sets = [*args.set, f"train.steps={steps}", f"train.eval_every={max(1, steps // EVALS_PER_RUN)}"]
            directory = out / f"x{multiplier}"
            wall = cli(["run", "--suite", args.suite, "--tasks", task, "--methods", args.method,
                        "--seeds", ",".join(map(str, args.seeds)), "--device", "cpu", "--out", str(directory),
                        "--data-dir", str(args.data_dir), *[f"--set={s}" for s in sets]], log)
            # Every seed run so far at this multiplier (the directory holds this candidate only).
            records = [r for r in read_records(directory) if r["task"] == task and r["method"] == args.method]
            entry["runs"][f"x{multiplier}"] = {
                "steps": steps, "wall_seconds": wall,
                "test_accuracy": stats([r["metrics"]["test_accuracy"] for r in records]),
                "val_accuracy": stats([r["metrics"]["val_accuracy"] for r in records]),
                "steps_per_second": stats([r["metrics"]["steps_per_second"] for r in records]),
                "seeds": [r["seed"] for r in records], "statuses": [r["status"] for r in records],
                "steps_done": [r["metrics"]["steps"] for r in records],
            }
            print(f"{task} x{multiplier}: test {entry['runs'][f'x{multiplier}']['test_accuracy']}", flush=True)
        entry["verdict"] = verdict(entry)
        summary["tasks"][task] = entry
        path.write_text(json.dumps(summary, indent=1, sort_keys=True) + "\n")
    print(render([out]))


def verdict(entry: dict[str, Any]) -> dict[str, Any]:
    """Whether a task is calibrated at the 1x budget: >= 10 points over majority, seed std <= 3 points,
    >= 90% of the accuracy at the largest multiplier run (4x where run)."""
    runs = entry["runs"]
    first = runs[min(runs, key=lambda k: int(k[1:]))]["test_accuracy"]
    last_key = max(runs, key=lambda k: int(k[1:]))
    last = runs[last_key]["test_accuracy"]
    margin = first["mean"] - entry["baseline"]["majority"]
    checks = {
        "points_over_majority": round(100 * margin, 2),
        "above_majority_by_10": margin >= 0.10,
        "seed_std_points": None if first["std"] is None else round(100 * first["std"], 2),
        "std_at_most_3": None if first["std"] is None else first["std"] <= 0.03,
        f"share_of_{last_key}": round(first["mean"] / last["mean"], 3) if last["mean"] and len(runs) > 1 else None,
        "near_plateau": None if len(runs) == 1 else bool(last["mean"]) and first["mean"] >= 0.9 * last["mean"],
    }
    return checks


def render(directories: list[Path]) -> str:
    """A markdown table of calibration.json files: test accuracy mean ± std per multiplier."""
    lines = ["| candidate | task | majority | x1 | x2 | x4 | x1 over majority | x1 seed std | x1 / top | steps/s (1 thread, shared) |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for directory in directories:
        summary = json.loads((directory / "calibration.json").read_text())
        for task, entry in summary["tasks"].items():
            cells = []
            for key in ("x1", "x2", "x4"):
                run = entry["runs"].get(key)
                if run is None:
                    cells.append("-")
                    continue
                acc = run["test_accuracy"]
                std = "" if acc["std"] is None else f" ± {100 * acc['std']:.1f}"
                seed0 = acc["values"][run["seeds"].index(0)] if 0 in run["seeds"] else None
                paired = "" if seed0 is None or len(acc["values"]) == 1 else f"; seed 0: {100 * seed0:.1f}"
                cells.append(f"{100 * acc['mean']:.1f}{std} ({run['steps']} steps, {len(acc['values'])} seeds{paired})")
            check = verdict(entry)
            share = [v for k, v in check.items() if k.startswith("share_of_")][0]
            speed = entry["runs"]["x1"]["steps_per_second"]["mean"]
            lines.append(f"| {directory.name} | {task} | {100 * entry['baseline']['majority']:.1f} | "
                         f"{' | '.join(cells)} | {check['points_over_majority']:+.1f} | "
                         f"{check['seed_std_points']} | {share} | {speed:.1f} |")
    return "\n".join(lines)


def cmd_speed(args: argparse.Namespace) -> None:
    """Steps/s of every suite method on each task (short runs, one thread): the budget's arithmetic."""
    from harness.config.suites import get_suite

    out: Path = args.out
    out.mkdir(parents=True, exist_ok=True)
    methods = args.methods or [m.label for m in get_suite(args.suite).methods]
    sets = [*args.set, f"train.steps={args.steps}", f"train.eval_every={args.steps}", "train.eval_batches=1"]
    cli(["run", "--suite", args.suite, "--tasks", ",".join(args.tasks), "--methods", ",".join(methods),
         "--seeds", "0", "--device", "cpu", "--out", str(out), "--data-dir", str(args.data_dir),
         *[f"--set={s}" for s in sets]], out / "log.txt")
    rows = {}
    for record in read_records(out):
        rows.setdefault(record["task"], {})[record["method"]] = record["metrics"]["steps_per_second"]
    (out / "speed.json").write_text(json.dumps({"suite": args.suite, "steps": args.steps, "sets": args.set,
                                                "threads": 1, "steps_per_second": rows}, indent=1) + "\n")
    for task, per_method in rows.items():
        print(task, {m: round(v, 2) for m, v in per_method.items()},
              f"seconds per step over methods: {sum(1 / v for v in per_method.values()):.3f}")


def cmd_summarize(args: argparse.Namespace) -> None:
    print(render(args.dirs))


def main(argv: Optional[list[str]] = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    for name in ("run", "speed"):
        sub = commands.add_parser(name)
        sub.add_argument("--suite", default="quick")
        sub.add_argument("--tasks", type=lambda s: s.split(","), required=True)
        sub.add_argument("--set", action="append", default=[], help="a --set layer passed to the CLI")
        sub.add_argument("--out", type=Path, required=True)
        sub.add_argument("--data-dir", type=Path, default=DEFAULT_DATA)
    run = commands.choices["run"]
    run.add_argument("--method", default="full")
    run.add_argument("--multipliers", type=lambda s: [int(x) for x in s.split(",")], default=[1, 2, 4])
    run.add_argument("--seeds", type=lambda s: [int(x) for x in s.split(",")], default=[0, 1, 2])
    speed = commands.choices["speed"]
    speed.add_argument("--methods", type=lambda s: s.split(","), default=None)
    speed.add_argument("--steps", type=int, default=40)
    summarize = commands.add_parser("summarize")
    summarize.add_argument("dirs", type=Path, nargs="+")
    args = parser.parse_args(argv)
    {"run": cmd_run, "speed": cmd_speed, "summarize": cmd_summarize}[args.command](args)


if __name__ == "__main__":
    main()
