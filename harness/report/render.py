"""`run_benchmark.py report DIR`: tables and plots rendered from record files alone.

A pure step: it reads `DIR/records/**/*.json` and `DIR/efficiency.json` (either may be missing)
and writes `DIR/report/`; it never builds a model or imports `methods`, so a report can be
re-rendered anywhere, from copied result files. Written files:

- accuracy.{md,tex,csv}: LRA-style method x task test accuracy (%, mean ± std over seeds, Avg);
- macs.{md,tex,csv}: attention-core MACs per example (forward) per method x task;
- cost.md, cells.csv, runs.csv: training cost, and every number above in long form;
- efficiency.{md,csv}: time and memory against length, ratios to sdpa and to full;
- accuracy_vs_macs.png, time_vs_length.png, memory_vs_length.png, training_curves.png;
- index.md and index.html, which show all of it together.
"""

from __future__ import annotations

import html
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional, Union

import pandas as pd

from bench_common import BenchError
from harness.report import plots, tables
from harness.sweep.records import iter_record_paths, read_record


@dataclass
class Block:
    """One piece of the index page, rendered both as Markdown and as HTML."""

    kind: str  # "heading", "text", "table", "image", "list"
    content: Any


def render_report(run_dir: Path) -> Path:
    """Writes `<run_dir>/report/` and returns that directory."""
    run_dir = Path(run_dir)
    out = run_dir / "report"
    out.mkdir(parents=True, exist_ok=True)
    records, unreadable = load_records(run_dir)
    efficiency = load_efficiency(run_dir)

    blocks: list[Block] = [Block("heading", f"Treeformer Bench report: {run_dir.name}")]
    blocks += _provenance(records, efficiency, run_dir)
    blocks += _accuracy_section(records, unreadable, out)
    blocks += _efficiency_section(efficiency, out)
    (out / "index.md").write_text(to_markdown(blocks), encoding="utf-8")
    (out / "index.html").write_text(to_html(blocks, title=f"Treeformer Bench: {run_dir.name}"), encoding="utf-8")
    return out


def load_records(run_dir: Path) -> tuple[list[dict], list[str]]:
    """Every readable record, and one line per unreadable one (reported, not fatal)."""
    records, unreadable = [], []
    for path in iter_record_paths(run_dir):
        try:
            records.append(read_record(path))
        except BenchError as err:
            unreadable.append(str(err))
    return records, unreadable


def load_efficiency(run_dir: Path) -> Optional[dict]:
    path = run_dir / "efficiency.json"
    if not path.exists():
        return None
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as err:
        raise BenchError(f"{path}: cannot read efficiency results ({type(err).__name__}: {err})") from None
    if not isinstance(data, dict) or not isinstance(data.get("rows"), list):
        raise BenchError(f"{path}: expected an object with a 'rows' list")
    return data


def _provenance(records: list[dict], efficiency: Optional[dict], run_dir: Path) -> list[Block]:
    envs = [r.get("env") or {} for r in records] + ([efficiency.get("env") or {}] if efficiency else [])
    commits = sorted({str(e.get("git_commit")) for e in envs if e.get("git_commit")})
    devices = sorted({str(e.get("device")) for e in envs if e.get("device")})
    suites = sorted({str(r.get("suite")) for r in records if r.get("suite")})
    lines = [f"results directory: `{run_dir}`", f"runs: {len(records)}"]
    if suites:
        lines.append(f"suite: {', '.join(suites)}")
    if devices:
        lines.append(f"device: {'; '.join(devices)}")
    if commits:
        lines.append(f"git commit: {', '.join(commits)}")
    return [Block("list", lines)]


def _accuracy_section(records: list[dict], unreadable: list[str], out: Path) -> list[Block]:
    blocks = [Block("heading", "Accuracy (test, %, mean ± std over seeds)")]
    if not records:
        blocks.append(Block("text", "No run records found (expected `records/<task>/<method>/seed<N>.json`)."))
        return blocks + _unreadable(unreadable)
    runs = tables.runs_frame(records)
    cells = tables.cell_summary(runs)
    runs.to_csv(out / "runs.csv", index=False)
    cells.to_csv(out / "cells.csv", index=False)

    accuracy = tables.accuracy_table(cells)
    accuracy.to_csv(out / "accuracy.csv")
    (out / "accuracy.md").write_text(markdown_table(accuracy) + "\n", encoding="utf-8")
    _write_latex(tables.accuracy_table(cells, latex=True), out / "accuracy.tex",
                 "Test accuracy (\\%, mean $\\pm$ std over seeds).")
    macs = tables.macs_table(cells)
    macs.to_csv(out / "macs.csv")
    (out / "macs.md").write_text(markdown_table(macs) + "\n", encoding="utf-8")
    _write_latex(macs, out / "macs.tex", "Attention-core MACs per example, forward pass.")
    cost = tables.cost_table(cells)
    (out / "cost.md").write_text(markdown_table(cost) + "\n", encoding="utf-8")

    avg_tasks = tables.average_tasks(cells)
    blocks.append(Block("table", accuracy))
    blocks.append(Block("text", "Failed cells show their status and are never averaged in. "
                        + (f"Avg covers the tasks where every run is ok: {', '.join(avg_tasks)}."
                           if avg_tasks else "No task has every run ok, so there is no Avg.")))
    image = plots.accuracy_vs_macs(cells, out / "accuracy_vs_macs.png")
    if image:
        blocks += [Block("heading", "Accuracy against attention-core MACs (Pareto frontier dashed)"), Block("image", image.name)]
    blocks += [Block("heading", "Attention-core MACs per example (forward)"), Block("table", macs)]
    unsupported = cells[cells["unsupported_ops"] != ""]
    if not unsupported.empty:
        blocks.append(Block("text", "Operators fvcore could not count (counted as 0): " + "; ".join(
            f"{r.method}/{r.task}: {r.unsupported_ops}" for r in unsupported.itertuples())))
    blocks += [Block("heading", "Training cost"), Block("table", cost)]
    image = plots.training_curves(records, out / "training_curves.png")
    if image:
        blocks += [Block("heading", "Training curves"), Block("image", image.name)]
    failed = runs[runs["status"] != "ok"]
    if not failed.empty:
        blocks += [Block("heading", "Runs that did not finish ok"), Block("list", [
            f"{r.task} / {r.method} / seed {r.seed}: {r.status.upper()}" + (f" ({r.reason})" if r.reason else "")
            for r in failed.itertuples()
        ])]
    return blocks + _unreadable(unreadable)


def _unreadable(unreadable: list[str]) -> list[Block]:
    return [Block("heading", "Unreadable records (left out)"), Block("list", unreadable)] if unreadable else []


def _efficiency_section(efficiency: Optional[dict], out: Path) -> list[Block]:
    blocks = [Block("heading", "Efficiency: time and memory against sequence length")]
    if not efficiency or not efficiency["rows"]:
        return blocks + [Block("text", "No efficiency results (run `run_benchmark.py efficiency`).")]
    frame = tables.efficiency_frame(efficiency["rows"])
    frame.to_csv(out / "efficiency.csv", index=False)
    by_title = tables.efficiency_tables(frame)
    settings = efficiency.get("settings") or {}
    note = ("Median time per call (ms) with the median ratio to sdpa from the same repetitions and "
            "the ratio to full; peak memory is the extra memory of one call (CPU: torch allocator "
            "events; CUDA: max allocated).")
    if settings:
        note += (f" Heads {settings.get('num_heads')}, head dim {settings.get('head_dim')}, "
                 f"{settings.get('dtype')}, batch 1.")
    markdown = [note, ""]
    for title, table in by_title.items():
        markdown += [f"### {title}", "", markdown_table(table), ""]
    (out / "efficiency.md").write_text("\n".join(markdown), encoding="utf-8")
    blocks.append(Block("text", note))
    for title, path in (("Time", plots.efficiency_curves(frame, "time_ms", "time per call (ms)", out / "time_vs_length.png")),
                        ("Peak memory", plots.efficiency_curves(frame, "peak_memory_mb", "peak memory (MiB)", out / "memory_vs_length.png"))):
        if path:
            blocks += [Block("heading", f"{title} against sequence length (log-log)"), Block("image", path.name)]
    for title, table in by_title.items():
        blocks += [Block("heading", title), Block("table", table)]
    skipped = frame[~frame["status"].isin(["ok"])]
    if not skipped.empty:
        blocks += [Block("heading", "Cells not measured"), Block("list", [
            f"{r['method']} {r['scope']} {r['pass']} n={r['seq_len']}: {str(r['status']).upper()} ({r['reason']})"
            for _, r in skipped.iterrows()
        ])]
    return blocks


def _write_latex(table: pd.DataFrame, path: Path, caption: str) -> None:
    escaped = table.rename(index=tables.latex_escape, columns=tables.latex_escape)
    escaped.index.name = None
    latex = escaped.to_latex(escape=False, caption=caption, column_format="l" + "r" * len(table.columns))
    path.write_text(latex, encoding="utf-8")


# -- index page ----------------------------------------------------------------------------------


def markdown_table(table: pd.DataFrame) -> str:
    """Cells as written ("50.00" stays "50.00"); the index shown only when it is named."""
    return table.to_markdown(index=table.index.name is not None, disable_numparse=True)


def to_markdown(blocks: list[Block]) -> str:
    parts = []
    for i, block in enumerate(blocks):
        if block.kind == "heading":
            parts.append(("# " if i == 0 else "## ") + block.content)
        elif block.kind == "text":
            parts.append(block.content)
        elif block.kind == "table":
            parts.append(markdown_table(block.content))
        elif block.kind == "image":
            parts.append(f"![{block.content}]({block.content})")
        elif block.kind == "list":
            parts.append("\n".join(f"- {item}" for item in block.content))
    return "\n\n".join(parts) + "\n"


def to_html(blocks: list[Block], title: str) -> str:
    body = []
    for i, block in enumerate(blocks):
        content: Union[str, Any] = block.content
        if block.kind == "heading":
            tag = "h1" if i == 0 else "h2"
            body.append(f"<{tag}>{html.escape(content)}</{tag}>")
        elif block.kind == "text":
            body.append(f"<p>{html.escape(content)}</p>")
        elif block.kind == "table":
            body.append(content.to_html(escape=True, border=0, index=content.index.name is not None))
        elif block.kind == "image":
            body.append(f'<img src="{html.escape(content)}" alt="{html.escape(content)}">')
        elif block.kind == "list":
            body.append("<ul>" + "".join(f"<li>{html.escape(str(item))}</li>" for item in content) + "</ul>")
    style = ("body{font-family:sans-serif;max-width:1200px;margin:auto;padding:1em}"
             "table{border-collapse:collapse;margin:1em 0}td,th{border:1px solid #ccc;padding:3px 8px;text-align:right}"
             "img{max-width:100%}")
    return (f"<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\"><title>{html.escape(title)}</title>"
            f"<style>{style}</style></head><body>\n" + "\n".join(body) + "\n</body></html>\n")
