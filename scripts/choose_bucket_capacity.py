"""Chooses bucketed TF's capacity from the trees our sweeps trained: how many keys each capacity keeps.

Bucketed TF (`bucket_capacity` = c) keeps the first c keys of each leaf; the keys beyond are attended
by no one. With c = factor x (keys per leaf on average), a leaf holding a share s of an example's
keys keeps min(s, factor / 2^h) of them, so the kept fraction of all keys is
sum over leaves of min(s_leaf, factor / 2^h). The shares are the `leaf_occupancy` every TF record
stores per layer (keys per leaf over its test split). They are averaged over examples and heads, so
the kept fractions here are upper bounds: one example's fullest leaf is fuller than the average
leaf of its rank. The records' `leaf_imbalance` (the fullest leaf of each example and head over the
mean leaf, averaged) is the factor at which that fullest leaf would be kept whole; it is reported
beside.

The chosen factor is the smallest of the grid whose median kept fraction is at least `--keep` on
every task. `scripts/bench_treeformer.py` times bucketed TF at that factor.

    python scripts/choose_bucket_capacity.py            # results/{quick,peers,matched,treeformer-ablation}
    python scripts/choose_bucket_capacity.py --keep 0.9 --folders quick

Writes results/treeformer_speed/bucket_capacity.{json,md}.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from datetime import datetime, timezone
from pathlib import Path
from typing import Optional

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench_common import BenchError  # noqa: E402
from harness.measure.env import git_commit  # noqa: E402
from harness.sweep.records import iter_record_paths, read_record  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
FACTORS = (1, 2, 4, 8, 16, 32)
FOLDERS = ("quick", "peers", "matched", "treeformer-ablation")
OUT = ROOT / "results" / "treeformer_speed" / "bucket_capacity"


def kept_fraction(shares: list[float], factor: float) -> float:
    """Share of all keys a capacity of factor x (keys per leaf on average) keeps, for leaf shares."""
    return sum(min(share, factor / len(shares)) for share in shares)


def tf_layers(results: Path, folders: tuple[str, ...]) -> dict[str, list[dict]]:
    """Per task, the diagnostics of every layer of every finished TF record (each config once)."""
    seen, layers = set(), {}
    for folder in folders:
        for path in iter_record_paths(results / folder):
            record = read_record(path)  # a damaged record is a one-line error naming it
            if record.get("status") != "ok" or record.get("attention") != "treeformer-tf":
                continue
            if record["config_hash"] in seen:  # the same run published in two folders
                continue
            seen.add(record["config_hash"])
            for diagnostics in (record.get("diagnostics") or {}).values():
                if diagnostics.get("leaf_occupancy"):
                    layers.setdefault(record["task"], []).append(diagnostics)
    return layers


def summarise(layers: dict[str, list[dict]], keep: float) -> dict:
    tasks = {}
    for task, rows in sorted(layers.items()):
        kept = {factor: [kept_fraction(row["leaf_occupancy"], factor) for row in rows] for factor in FACTORS}
        imbalance = [row["leaf_imbalance"] for row in rows]
        tasks[task] = {
            "layers": len(rows),
            "kept_median": {str(f): statistics.median(v) for f, v in kept.items()},
            "kept_min": {str(f): min(v) for f, v in kept.items()},
            "fullest_leaf_factor_median": statistics.median(imbalance),
            "fullest_leaf_factor_max": max(imbalance),
        }
    enough = [f for f in FACTORS if tasks and all(t["kept_median"][str(f)] >= keep for t in tasks.values())]
    return {"keep": keep, "factors": list(FACTORS), "tasks": tasks, "factor": enough[0] if enough else None}


def report(summary: dict, command: str, commit: Optional[str], folders: tuple[str, ...]) -> str:
    factors = summary["factors"]
    lines = [
        "# Bucketed TF: the keys each capacity keeps on trained trees",
        "",
        f"Command: `{command}`; commit {commit}; {datetime.now(timezone.utc):%Y-%m-%dT%H:%M:%SZ}; "
        f"records: TF runs under results/{{{','.join(folders)}}}/ (each config once), every layer.",
        "",
        "Capacity = factor x keys per leaf on average (factor 1: n / 2^h). Kept: sum over leaves of "
        "min(leaf share, factor / 2^h), from each layer's `leaf_occupancy` (averaged over its test split, "
        "so an upper bound per example); median [minimum] over layers. Fullest-leaf factor: the record's "
        "`leaf_imbalance`, the factor that keeps an example's fullest leaf whole; median [maximum].",
        "",
        "| task | layers | " + " | ".join(f"kept at {f}" for f in factors) + " | fullest-leaf factor |",
        "|---|--:|" + "--:|" * len(factors) + "--:|",
    ]
    for task, row in summary["tasks"].items():
        cells = [f"{row['kept_median'][str(f)]:.3f} [{row['kept_min'][str(f)]:.3f}]" for f in factors]
        lines.append(f"| {task} | {row['layers']} | " + " | ".join(cells)
                     + f" | {row['fullest_leaf_factor_median']:.1f} [{row['fullest_leaf_factor_max']:.1f}] |")
    chosen = summary["factor"]
    lines += ["", f"Chosen: factor {chosen}, the smallest whose median kept fraction is at least "
              f"{summary['keep']:g} on every task." if chosen is not None else
              f"Chosen: none; no factor of the grid keeps {summary['keep']:g} on every task."]
    return "\n".join(lines) + "\n"


def main(argv: Optional[list[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--results", type=Path, default=ROOT / "results", help="folder holding the sweeps")
    parser.add_argument("--folders", nargs="+", default=list(FOLDERS), help="sweeps whose TF records count")
    parser.add_argument("--keep", type=float, default=0.95, help="median share of keys the capacity must keep")
    parser.add_argument("--out", type=Path, default=OUT, help="output stem (.json and .md are written)")
    args = parser.parse_args(argv)
    if not 0 < args.keep <= 1:
        parser.error(f"--keep must be in (0, 1], got {args.keep}")
    folders = tuple(args.folders)
    try:
        layers = tf_layers(args.results, folders)
    except BenchError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    if not layers:
        where = f"{args.results}/{{{','.join(folders)}}}"
        print(f"error: no finished treeformer-tf record with leaf occupancy under {where}", file=sys.stderr)
        return 2
    summary = summarise(layers, args.keep)
    command = "python " + " ".join(["scripts/choose_bucket_capacity.py"] + (argv if argv is not None else sys.argv[1:]))
    text = report(summary, command, git_commit(), folders)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    payload = {**summary, "command": command, "commit": git_commit()}
    args.out.with_suffix(".json").write_text(json.dumps(payload, indent=2) + "\n")
    args.out.with_suffix(".md").write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
