"""The Treeformer speed benchmark's results (results/treeformer_speed/speed_threads*.json) as markdown.

One renderer for the benchmark's own report (scripts/bench_treeformer.py) and the README's block
(scripts/update_readme.py), so the two cannot disagree. The payload holds `env` (machine, threads,
commit, command, load averages), `steps` and `rows` (median paired ratios with their 95% intervals),
`targets` (each bound, the measured median and whether it held) and optionally `notes` per method.
"""

from __future__ import annotations

from typing import Any, Optional


def speed_report(payload: dict[str, Any], heading: str = "##") -> str:
    """Provenance line, then the step table, the layer table, the targets and the method notes."""
    env = payload["env"]
    load_end = env.get("load_average_end") or []
    lines = [
        f"Machine: {env['machine']}; threads {env['threads']}; torch {env['versions']['torch']}; "
        f"python {env['versions']['python']}; commit {env['git_commit']}; {env['date_utc']}; "
        f"load average at start {_loads(env['load_average'])}, at end {_loads(load_end)}.",
        "",
        f"Command: `{env['command']}`",
        "",
        "Ratio: median of the per-repetition (paired) time ratios to sdpa, 95% interval of that median "
        "in brackets (order statistics).",
    ]
    steps, rows = payload.get("steps") or [], payload.get("rows") or []
    if steps:
        step_length = steps[0]["seq_len"]
        lines += [
            "", f"{heading} Training step of the whole model at n={step_length}", "",
            "The quick suite's model (2 layers, 64 wide, 2 heads, token head, fp32): forward, loss, backward "
            "and AdamW update, as harness/training/loop.py runs them.",
            "", "| method | step ms | ratio to sdpa [95%] | pairs | status |", "|---|--:|--:|--:|---|",
        ]
        lines += [f"| {e['method']} | {_fmt(e['time_ms'], '.1f')} | {_ratio(e)} | {e['pairs']} | {_status(e)} |"
                  for e in steps]
    if rows:
        lines += [
            "", f"{heading} One attention layer, forward + backward", "",
            "B=1, 4 heads, head_dim 64, fp32, projections included; \"projections only\" (an identity core) is the "
            "floor of any attention layer. Extra memory: peak bytes torch allocates during one forward+backward, "
            "from the profiler's memory timeline.",
            "", "| method | n | time ms | ratio to sdpa [95%] | pairs | extra MiB | memory / sdpa | status |",
            "|---|--:|--:|--:|--:|--:|--:|---|",
        ]
        lines += [f"| {e['method']} | {e['seq_len']} | {_fmt(e['time_ms'], '.1f')} | {_ratio(e)} | {e['pairs']} | "
                  f"{_fmt(e['extra_memory_mb'], '.1f')} | {_fmt(e['memory_ratio_to_sdpa'], '.2f')} | {_status(e)} |"
                  for e in rows]
    lines += ["", f"{heading} Targets", "", "| target | measured | 95% interval | met |", "|---|--:|--:|---|"]
    for check in payload.get("targets") or []:
        interval = f"{check['ci95'][0]:.3f}-{check['ci95'][1]:.3f}" if check["ci95"] else "-"
        met = "not measured" if check["met"] is None else "yes" if check["met"] else "no"
        lines.append(f"| {check['target']} | {_fmt(check['measured'], '.3f')} | {interval} | {met} |")
    notes = {label: note for label, note in (payload.get("notes") or {}).items() if note}
    if notes:
        lines += ["", f"{heading} Method notes", ""] + [f"- {label}: {note}" for label, note in notes.items()]
    return "\n".join(lines) + "\n"


def _loads(values: list[float]) -> str:
    return ", ".join(f"{x:.1f}" for x in values) or "not recorded"


def _fmt(value: Optional[float], spec: str) -> str:
    return "-" if value is None else format(value, spec)


def _ratio(entry: dict) -> str:
    if entry["ratio_to_sdpa"] is None:
        return "-"
    spread = entry["ratio_ci95"]
    return f"{entry['ratio_to_sdpa']:.3f}x" + (f" [{spread[0]:.3f}-{spread[1]:.3f}]" if spread else " [too few pairs]")


def _status(entry: dict) -> str:
    return entry["status"] + (": " + entry["reason"] if entry["reason"] else "")
