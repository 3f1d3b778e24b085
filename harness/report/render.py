"""`run_benchmark.py report DIR`: tables and plots rendered from record files alone.

A pure step: it reads `DIR/records/**/*.json` and `DIR/efficiency.json` (either may be missing)
and writes `DIR/report/`; it never builds a model or imports `methods`, so a report can be
re-rendered anywhere, from copied result files. Written files:

- accuracy.{md,tex,csv}: LRA-style method x task test accuracy (%, mean ± 95% interval over seeds,
  Avg, the majority-class and shortcut rows, marks for significance against exact attention, seeds at
  or below a baseline, still learning);
- significance.md: each method against exact attention (full, else sdpa) per task (test, difference
  with its 95% interval, t, df, p);
- macs.{md,tex,csv}, macs_detail.md: attention-core MACs per example (forward), over seeds and the test split;
- matched.md: accuracy at matched attention MACs (the `matched` suite);
- cost.md, cells.csv, runs.csv: training cost, and every number above in long form;
- efficiency.{md,csv}: time and memory against length, paired ratios to sdpa and to full;
- accuracy_vs_macs.png, accuracy_vs_throughput.png, time_vs_length.png, memory_vs_length.png,
  training_curves.png;
- index.md and index.html, which show all of it together, problems first.

Problems (unreadable records or efficiency file, runs of a task with different budgets) are
listed at the top of the index and returned, so the command can print them and exit 1.
"""

from __future__ import annotations

import html
import json
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional, Union

import pandas as pd

from bench_common import BenchError
from harness.report import cells as cell_frames
from harness.report import efficiency_tables, plots, tables
from harness.report.identity import distinct_runs
from harness.report.budget import BUDGET_KEYS, budget_conflicts
from harness.report.stats import RankingStability
from harness.sweep.records import iter_record_paths, process_alive, read_record


@dataclass
class Block:
    """One piece of the index page, rendered both as Markdown and as HTML."""

    kind: str  # "heading", "text", "table", "image", "list"
    content: Any


@dataclass
class RenderedReport:
    out: Path
    problems: list[str] = field(default_factory=list)  # one line each; non-empty means exit 1


@dataclass
class AccuracyTables:
    """Everything the accuracy part of a report shows, computed from records alone."""

    runs: pd.DataFrame
    cells: pd.DataFrame
    baselines: pd.DataFrame
    significance: pd.DataFrame
    rankings: dict[str, Optional[RankingStability]]
    accuracy: pd.DataFrame
    notes: str
    macs: pd.DataFrame
    macs_detail: Optional[pd.DataFrame]
    matched: Optional[pd.DataFrame]
    cost: pd.DataFrame


def accuracy_tables(records: list[dict]) -> AccuracyTables:
    runs = cell_frames.runs_frame(records)
    cells = cell_frames.cell_summary(runs)
    baselines = cell_frames.task_baselines(runs)
    significance = cell_frames.comparisons(runs, cells)
    return AccuracyTables(
        runs=runs, cells=cells, baselines=baselines, significance=significance,
        rankings=cell_frames.rankings(runs, cells),
        accuracy=tables.accuracy_table(cells, baselines, significance),
        notes=tables.accuracy_notes(cells, baselines, significance),
        macs=tables.macs_table(cells), macs_detail=tables.macs_detail_table(cells),
        matched=tables.matched_table(cells, runs), cost=tables.cost_table(cells))


@dataclass(frozen=True)
class Selection:
    """The runs a report shows (`report --methods/--tasks/--seeds`); None selects all."""

    methods: Optional[list[str]] = None
    tasks: Optional[list[str]] = None
    seeds: Optional[list[int]] = None

    def given(self) -> list[tuple[str, list]]:
        return [(kind, names) for kind, names in (("method", self.methods), ("task", self.tasks),
                                                  ("seed", self.seeds)) if names is not None]

    def apply(self, records: list[dict], run_dir: Path) -> list[dict]:
        """The selected records; a name no record has is refused (a typo would silently show nothing)."""
        for kind, names in self.given():
            present = sorted({record[kind] for record in records}, key=str)
            absent = [name for name in names if name not in present]
            if absent:
                raise BenchError(f"report --{kind}s: no record of {kind} {absent[0]!r} in {run_dir} "
                                 f"(its records have {kind}s {', '.join(map(str, present)) or 'none'})")
        return [record for record in records if all(record[kind] in names for kind, names in self.given())]

    def describe(self) -> str:
        return "; ".join(f"{kind}s {', '.join(map(str, names))}" for kind, names in self.given())


def render_report(run_dir: Path, selection: Selection = Selection()) -> RenderedReport:
    """Writes `<run_dir>/report/`; returns it with the problems found (empty when none).

    The report is rendered into a staging folder that then replaces `report/` whole, so an
    interrupted rendering (Ctrl-C, kill -9) leaves the previous report as it was, never a mix.
    A folder with neither records nor efficiency results is refused: nothing would be reported."""
    run_dir = Path(run_dir)
    out = run_dir / "report"
    records, problems = load_records(run_dir)
    if not records and not problems and not (run_dir / "efficiency.json").exists():
        raise BenchError(f"report: {run_dir} holds no run records (records/<task>/<method>/seed<N>.json) and no "
                         f"efficiency.json; nothing to report")
    records = selection.apply(records, run_dir)
    remove_abandoned_renderings(run_dir)
    staging = run_dir / f".report.{os.getpid()}.partial"
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    try:
        problems = _render(run_dir, staging, records, problems, selection)
        replace_directory(staging, out)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return RenderedReport(out, problems)


def replace_directory(new: Path, target: Path) -> None:
    """Puts `new` at `target`. The old folder is first moved aside, so at every moment `target` is
    either the old rendering or the new one (or, after a kill between the two renames, absent
    with the old one beside it, which the next rendering puts back)."""
    if not target.exists():
        os.rename(new, target)
        return
    aside = target.with_name(f".{target.name}.{os.getpid()}.old")
    os.rename(target, aside)
    os.rename(new, target)
    shutil.rmtree(aside, ignore_errors=True)


def remove_abandoned_renderings(run_dir: Path) -> None:
    """Cleans up after renderings killed mid-way: a staging folder is deleted; a moved-aside old
    report comes back when no report took its place."""
    for staging in run_dir.glob(".report.*.partial"):
        if not _writer_alive(staging):
            shutil.rmtree(staging, ignore_errors=True)
    for aside in run_dir.glob(".report.*.old"):
        if _writer_alive(aside):
            continue
        if (run_dir / "report").exists():
            shutil.rmtree(aside, ignore_errors=True)
        else:
            os.rename(aside, run_dir / "report")


def _writer_alive(path: Path) -> bool:
    """Whether the process named in `.report.<pid>.<kind>` is another live process."""
    pid = path.name.split(".")[-2]
    return pid.isdigit() and int(pid) != os.getpid() and process_alive(int(pid))


def _render(run_dir: Path, out: Path, records: list[dict], problems: list[str], selection: Selection) -> list[str]:
    """Renders every file of the report into `out`; returns all problems found (the records' first)."""
    efficiency, efficiency_problem = load_efficiency(run_dir)
    problems = problems + ([efficiency_problem] if efficiency_problem else [])
    conflicts = budget_conflicts(records)

    blocks: list[Block] = [Block("heading", f"Treeformer Bench report: {run_dir.name}")]
    blocks += _problems(problems, conflicts)
    blocks += _provenance(records, efficiency, run_dir, selection)
    blocks += _accuracy_section(records, out)
    blocks += _efficiency_section(efficiency, out)
    (out / "index.md").write_text(to_markdown(blocks), encoding="utf-8")
    (out / "index.html").write_text(to_html(blocks, title=f"Treeformer Bench: {run_dir.name}"), encoding="utf-8")
    return problems + [f"budget: {line}" for line in conflicts]


def load_records(run_dir: Path) -> tuple[list[dict], list[str]]:
    """Every readable record that is the run its path names, counted once; and one line per record
    left out (unreadable, misplaced or a duplicate: identity.py)."""
    found, unreadable = [], []
    for path in iter_record_paths(run_dir):
        try:
            found.append((path, read_record(path)))
        except BenchError as err:
            unreadable.append(f"left out: {err}")
    records, misplaced = distinct_runs(found)
    return records, unreadable + misplaced


def load_efficiency(run_dir: Path) -> tuple[Optional[dict], Optional[str]]:
    """The efficiency results, or None and a one-line reason when the file is there but unusable."""
    path = run_dir / "efficiency.json"
    if not path.exists():
        return None, None
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as err:
        return None, f"left out: {path}: cannot read efficiency results ({type(err).__name__}: {err})"
    if not isinstance(data, dict) or not isinstance(data.get("rows"), list) \
            or not all(isinstance(row, dict) for row in data["rows"]):
        return None, f"left out: {path}: expected an object with a 'rows' list of objects"
    problem = efficiency_tables.row_problem(data["rows"])
    if problem:
        return None, f"left out: {path}: {problem}"
    return data, None


def _problems(problems: list[str], conflicts: list[str]) -> list[Block]:
    blocks = []
    if conflicts:
        blocks += [Block("heading", "WARNING: runs of a task differ in budget: their numbers are not comparable"),
                   Block("text", "The evaluation protocol trains every method on a task with the same budget. "
                         "Keys compared: " + ", ".join(BUDGET_KEYS) + "."),
                   Block("list", conflicts)]
    if problems:
        blocks += [Block("heading", "Left out of this report"), Block("list", problems)]
    return blocks


def _provenance(records: list[dict], efficiency: Optional[dict], run_dir: Path, selection: Selection) -> list[Block]:
    envs = [r.get("env") or {} for r in records] + ([efficiency.get("env") or {}] if efficiency else [])
    commits = sorted({str(e.get("git_commit")) for e in envs if e.get("git_commit")})
    devices = sorted({str(e.get("device")) for e in envs if e.get("device")})
    suites = sorted({str(r.get("suite")) for r in records if r.get("suite")})
    lines = [f"results directory: `{run_dir}`", f"runs: {len(records)}"]
    if selection.given():
        lines.append(f"selected runs only: {selection.describe()} (efficiency results are not filtered)")
    if suites:
        lines.append(f"suite: {', '.join(suites)}")
    if devices:
        lines.append(f"device: {'; '.join(devices)}")
    if commits:
        lines.append(f"git commit: {', '.join(commits)}")
    return [Block("list", lines)]


def _accuracy_section(records: list[dict], out: Path) -> list[Block]:
    blocks = [Block("heading", "Accuracy (test, %, mean ± 95% interval over seeds)")]
    if not records:
        return blocks + [Block("text", "No run records found (expected `records/<task>/<method>/seed<N>.json`).")]
    t = accuracy_tables(records)
    t.runs.to_csv(out / "runs.csv", index=False)
    t.cells.to_csv(out / "cells.csv", index=False)
    t.accuracy.to_csv(out / "accuracy.csv")
    (out / "accuracy.md").write_text(markdown_table(t.accuracy) + "\n\n" + t.notes + "\n", encoding="utf-8")
    _write_latex(tables.accuracy_table(t.cells, t.baselines, t.significance, latex=True), out / "accuracy.tex",
                 "Test accuracy (\\%, mean $\\pm$ 95\\% interval over seeds).")
    t.macs.to_csv(out / "macs.csv")
    (out / "macs.md").write_text(markdown_table(t.macs) + "\n", encoding="utf-8")
    _write_latex(t.macs, out / "macs.tex", "Attention-core MACs per example, forward pass (mean over seeds).")
    (out / "cost.md").write_text(markdown_table(t.cost) + "\n", encoding="utf-8")

    blocks += [Block("table", t.accuracy), Block("text", t.notes), Block("text", average_note(t.cells))]
    if not t.significance.empty:
        significance = tables.significance_table(t.significance)
        (out / "significance.md").write_text(markdown_table(significance) + "\n", encoding="utf-8")
        blocks += [Block("heading", "Against full attention, per task"), Block("table", significance)]
    blocks += [Block("heading", "Is the ranking stable across seeds?"),
               Block("list", tables.ranking_lines(t.rankings))]
    for title, image in (
            ("Accuracy against attention-core MACs (95% intervals; Pareto frontier dashed; equal MACs drawn side by side)",
             plots.accuracy_vs_macs(t.cells, out / "accuracy_vs_macs.png")),
            ("Accuracy against training speed (marker area: peak memory)",
             plots.accuracy_vs_throughput(t.cells, out / "accuracy_vs_throughput.png"))):
        if image:
            blocks += [Block("heading", title), Block("image", image.name)]
    blocks += [Block("heading", "Attention-core MACs per example (forward; mean ± std over seeds where they differ)"),
               Block("table", t.macs)]
    if t.macs_detail is not None:
        (out / "macs_detail.md").write_text(markdown_table(t.macs_detail) + "\n", encoding="utf-8")
        blocks += [Block("heading", "MACs in detail: over the test split, algorithmic, balanced-tree formula"),
                   Block("table", t.macs_detail)]
    unsupported = t.cells[t.cells["unsupported_ops"] != ""]
    if not unsupported.empty:
        blocks.append(Block("text", "Operators fvcore could not count (counted as 0): " + "; ".join(
            f"{r.method}/{r.task}: {r.unsupported_ops}" for r in unsupported.itertuples())))
    if t.matched is not None:
        (out / "matched.md").write_text(markdown_table(t.matched) + "\n", encoding="utf-8")
        blocks += [Block("heading", "Accuracy at matched attention MACs"), Block("table", t.matched),
                   Block("text", "MACs are each cell's measured attention-core MACs (mean over seeds and the "
                         "test split); ratios are to the reference's measured MACs and to the target it was solved for.")]
    blocks += [Block("heading", "Training cost"), Block("table", t.cost)]
    majority = dict(zip(t.baselines["task"], t.baselines["majority"]))
    image = plots.training_curves(plots.history_frame(records), majority, out / "training_curves.png")
    if image:
        blocks += [Block("heading", "Training curves (mean over seeds, 95% interval band; dotted: majority class)"),
                   Block("image", image.name)]
    failed = t.runs[t.runs["status"] != "ok"]
    if not failed.empty:
        blocks += [Block("heading", "Runs that did not finish ok"), Block("list", [
            f"{r.task} / {r.method} / seed {r.seed}: {r.status.upper()}" + (f" ({r.reason})" if r.reason else "")
            for r in failed.itertuples()
        ])]
    return blocks


def average_note(cells: pd.DataFrame) -> str:
    """What the Avg column covers, naming the methods it leaves out (no ok run anywhere)."""
    avg_tasks = cell_frames.average_tasks(cells)
    ok_methods = set(cells.loc[cells["label"] == "ok", "method"])
    unscored = [m for m in dict.fromkeys(cells["method"]) if m not in ok_methods]
    note = "Failed cells show their status and are never averaged in. "
    if not avg_tasks:
        return note + "No task has every run ok, so there is no Avg."
    note += f"Avg covers the tasks where every run is ok: {', '.join(avg_tasks)}"
    if unscored:
        note += (f", counting only methods with some ok run; {', '.join(unscored)} "
                 f"{'has' if len(unscored) == 1 else 'have'} none, hence no Avg")
    return note + "."


def efficiency_note(efficiency: dict) -> str:
    settings = efficiency.get("settings") or {}
    note = ("Median time per call (ms, 2 significant digits) with the paired ratio to sdpa and to full from "
            "interleaved repetitions in one process, each with its 95% interval where measured; peak memory is "
            "the extra memory of one call (CPU: torch allocator events; CUDA: max allocated). Rows marked "
            "(random tree) / (balanced tree) time Treeformer with that tree.")
    if settings:
        note += (f" Heads {settings.get('num_heads')}, head dim {settings.get('head_dim')}, "
                 f"{settings.get('dtype')}, batch 1.")
    return note


def _efficiency_section(efficiency: Optional[dict], out: Path) -> list[Block]:
    blocks = [Block("heading", "Efficiency: time and memory against sequence length")]
    if not efficiency or not efficiency["rows"]:
        return blocks + [Block("text", "No efficiency results (run `run_benchmark.py efficiency`).")]
    frame = efficiency_tables.efficiency_frame(efficiency["rows"])
    frame.to_csv(out / "efficiency.csv", index=False)
    by_title = efficiency_tables.efficiency_tables(frame)
    note = efficiency_note(efficiency)
    markdown = [note, ""]
    for title, table in by_title.items():
        markdown += [f"### {title}", "", markdown_table(table), ""]
    (out / "efficiency.md").write_text("\n".join(markdown), encoding="utf-8")
    blocks.append(Block("text", note))
    for title, path in (
            ("Time", plots.efficiency_curves(frame, "time_ms", "time per call (ms)", out / "time_vs_length.png")),
            ("Peak memory", plots.efficiency_curves(frame, "peak_memory_mb", "peak memory (MiB)",
                                                    out / "memory_vs_length.png"))):
        if path:
            blocks += [Block("heading", f"{title} against sequence length (log-log)"), Block("image", path.name)]
    for title, table in by_title.items():
        blocks += [Block("heading", title), Block("table", table)]
    skipped = efficiency_tables.skipped_lines(frame)
    if skipped:
        blocks += [Block("heading", "Cells not measured"), Block("list", skipped)]
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
