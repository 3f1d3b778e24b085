#!/usr/bin/env python3
"""README result blocks, written from results/ so that they cannot drift from the records.

A block is the text between `<!-- results:DIR/PART -->` and `<!-- /results:DIR/PART -->`, where
DIR is a folder of results/ and PART one of:

    accuracy, significance, ranking, macs, macs-detail, matched, cost     tables of the report
    provenance                                                            commits, threads and commands of the records
    time-SCOPE-PASS, memory-SCOPE-PASS, macs-SCOPE-PASS                   efficiency tables (e.g. time-layer-forward_backward)
    figure-NAME                                                           the report's NAME.png
    speed_threadsN                                                        scripts/bench_treeformer.py's results with N threads
    compile_threadsN                                                      scripts/bench_compile.py's results with N threads

Tables are computed from the records by the same functions as `run_benchmark.py report`.

    python scripts/update_readme.py                  re-render each cited results/DIR/report/, rewrite the blocks
    python scripts/update_readme.py --check          exit 1 when a block differs from what results/ gives
    python scripts/update_readme.py --check --readme PATH

Exit status: 0 up to date (or rewritten), 1 a block differs or cites a missing figure, 2 bad input.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from bench_common import BenchError, first_line  # noqa: E402
from harness.report import tables  # noqa: E402
from harness.report.efficiency_tables import efficiency_frame, efficiency_tables  # noqa: E402
from harness.report.render import (accuracy_tables, efficiency_note, load_efficiency, load_records,  # noqa: E402
                                   markdown_table, render_report)
from harness.report.speed_tables import compile_report, speed_report  # noqa: E402

BLOCK = re.compile(r"(<!-- results:(?P<name>[\w./-]+) -->\n)(?P<body>.*?)(<!-- /results:(?P=name) -->)", re.S)
SPEED_PART = re.compile(r"(speed|compile)_threads\d+")  # scripts/bench_treeformer.py's / bench_compile.py's results
FIGURE_CAPTIONS = {
    "accuracy_vs_macs": "accuracy vs attention-core MACs",
    "accuracy_vs_throughput": "accuracy vs training speed, marker area = peak memory",
    "training_curves": "validation accuracy during training",
    "time_vs_length": "time vs length",
    "memory_vs_length": "memory vs length",
}


def block_text(name: str, cache: dict) -> str:
    """The body of block `name` (DIR/PART), from results/DIR's records and efficiency.json."""
    directory, _, part = name.rpartition("/")
    results = REPO / "results" / directory
    if not directory or not results.is_dir():
        raise BenchError(f"block {name!r}: expected DIR/PART with results/DIR a directory of results")
    if part.startswith("figure-"):
        stem = part[len("figure-"):]
        return f"![{FIGURE_CAPTIONS.get(stem, stem)}](results/{directory}/report/{stem}.png)\n"
    if part.startswith(("time-", "memory-", "macs-core-", "macs-layer-")):
        return _efficiency_block(name, results, part, cache)
    if SPEED_PART.fullmatch(part):
        return _speed_block(name, results / f"{part}.json")
    if directory not in cache:
        records, left_out = load_records(results)
        if left_out:
            raise BenchError(f"block {name!r}: {left_out[0]}")
        cache[directory] = accuracy_tables(records)
    if part == "provenance":
        return provenance(load_records(results)[0])
    t = cache[directory]
    if part == "accuracy":
        return markdown_table(t.accuracy) + "\n\n" + t.notes + "\n"
    if part == "ranking":
        return "\n".join(f"- {line}" for line in tables.ranking_lines(t.rankings)) + "\n"
    chosen = {"significance": tables.significance_table(t.significance) if not t.significance.empty else None,
              "macs": t.macs, "macs-detail": t.macs_detail, "matched": t.matched, "cost": t.cost}
    if part not in chosen:
        raise BenchError(f"block {name!r}: unknown part {part!r} (see scripts/update_readme.py)")
    if chosen[part] is None:
        return f"(results/{directory} has nothing for this table.)\n"
    return markdown_table(chosen[part]) + "\n"


def provenance(records: list[dict]) -> str:
    """Which commits, torch thread counts and commands made a folder's records, as the records say."""
    import pandas as pd

    rows: dict[tuple, int] = {}
    for record in records:
        env = record.get("env") or {}
        key = (env.get("git_commit") or "unknown", record.get("config", {}).get("threads", "not recorded"),
               env.get("command") or "unknown")
        rows[key] = rows.get(key, 0) + 1
    frame = pd.DataFrame([{"commit": f"`{c}`", "threads": t, "command": f"`{m}`", "runs": n}
                          for (c, t, m), n in sorted(rows.items(), key=lambda item: str(item[0]))])
    return markdown_table(frame.set_index("commit")) + "\n"


def _efficiency_block(name: str, results: Path, part: str, cache: dict) -> str:
    kind, _, rest = part.partition("-")
    scope, _, pass_ = rest.partition("-")
    key = ("efficiency", results)
    if key not in cache:
        data, problem = load_efficiency(results)
        if data is None:
            raise BenchError(f"block {name!r}: {problem or f'{results}/efficiency.json is missing'}")
        cache[key] = (data, efficiency_tables(efficiency_frame(data["rows"])))
    data, by_title = cache[key]
    title = {"time": f"{scope} {pass_}: time ms (x sdpa [95% CI], x full [95% CI])",
             "memory": f"{scope} {pass_}: peak memory MiB",
             "macs": f"{scope} {pass_}: executed MACs (x full)"}.get(kind)
    if title is None:
        raise BenchError(f"block {name!r}: expected time-, memory- or macs-SCOPE-PASS")
    if title not in by_title:
        raise BenchError(f"block {name!r}: no {scope!r} {pass_!r} rows in {results}/efficiency.json")
    text = markdown_table(by_title[title]) + "\n"
    return (efficiency_note(data) + "\n\n" + text) if kind == "time" else text


def _speed_block(name: str, path: Path) -> str:
    try:
        payload = json.loads(path.read_text())
    except (OSError, ValueError) as error:
        raise BenchError(f"block {name!r}: cannot read {path}: {first_line(error)}") from None
    return compile_report(payload) if path.stem.startswith("compile") else speed_report(payload, heading="####")


def expected(readme: str) -> tuple[str, list[str]]:
    """The README with every block rewritten, and the blocks' names."""
    cache: dict = {}
    names = []

    def replace(match: re.Match) -> str:
        names.append(match["name"])
        return match.group(1) + block_text(match["name"], cache) + match.group(4)

    return BLOCK.sub(replace, readme), names


def missing_figures(readme: str) -> list[str]:
    return [path for path in re.findall(r"!\[[^\]]*\]\((results/[^)]+\.png)\)", readme) if not (REPO / path).is_file()]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="compare only; exit 1 when a block differs")
    parser.add_argument("--readme", type=Path, default=REPO / "README.md")
    args = parser.parse_args(argv)
    try:
        readme = args.readme.resolve()
        current = readme.read_text(encoding="utf-8")
        if not args.check:
            reported = {m["name"].rpartition("/")[0] for m in BLOCK.finditer(current)
                        if not SPEED_PART.fullmatch(m["name"].rpartition("/")[2])}  # the benchmark writes its own
            for directory in sorted(reported):
                os.chdir(REPO)  # the figures the blocks cite; a relative path, so the index names no checkout
                for problem in render_report(Path("results") / directory).problems:
                    print(f"results/{directory}: {problem}", file=sys.stderr)
        wanted, names = expected(current)
    except (BenchError, OSError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    if args.check:
        stale = [m["name"] for m, w in zip(BLOCK.finditer(current), BLOCK.finditer(wanted)) if m["body"] != w["body"]]
        problems = [f"{args.readme}: block {name} differs from results/ (run scripts/update_readme.py)"
                    for name in stale]
        problems += [f"{args.readme}: cites {path}, which does not exist" for path in missing_figures(current)]
        for line in problems:
            print(line, file=sys.stderr)
        print(f"{args.readme}: {len(names)} result blocks checked, {len(problems)} problems")
        return 1 if problems else 0
    readme.write_text(wanted, encoding="utf-8")
    print(f"{args.readme}: {len(names)} result blocks written")
    return 0


if __name__ == "__main__":
    sys.exit(main())
