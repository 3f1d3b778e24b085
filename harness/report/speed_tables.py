"""The speed benchmarks' results as markdown: Treeformer against sdpa
(results/treeformer_speed/speed_threads*.json) and what compiling gives each method
(results/compile_speed/compile_threads*.json).

One renderer for each benchmark's own report (scripts/bench_treeformer.py, scripts/bench_compile.py)
and the README's block (scripts/update_readme.py), so the two cannot disagree. The speed The payload holds `env` (machine, threads,
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


def compile_report(payload: dict[str, Any]) -> str:
    """Provenance line, then one row per method and shape: compile seconds cold and warm, the paired
    compiled/eager step ratio, the steps that repay the warm compile, and what a run of the
    payload's `steps_per_run` steps saves net of it."""
    env, steps_per_run = payload["env"], payload["steps_per_run"]
    lines = [
        f"Machine: {env['machine']}; threads {env['threads']}; torch {env['versions']['torch']}; commit "
        f"{env['git_commit']}; {env['date_utc']}; load average at start {_loads(env['load_average'])}, "
        f"at end {_loads(env.get('load_average_end') or [])}.",
        "",
        f"Command: `{env['command']}`",
        "",
        "Compile seconds: torch's compile callbacks over the first forward and backward; cold = empty inductor "
        "cache, warm = the disk cache the cold compile left (what a sweep's later runs pay). Ratio: compiled / "
        "eager time, paired in each repetition, median and 95% interval (order statistics). Break-even: warm "
        "compile seconds over the time saved per step (the eager median times one minus the ratio). "
        f"Net: seconds a {steps_per_run}-step run saves after "
        "paying the warm compile (negative: compiling costs more than it saves).",
        "",
        f"| method | shape | compile cold s | compile warm s | eager ms | compiled ms | ratio [95%] | break-even steps "
        f"| net s per {steps_per_run} steps |",
        "|---|---|--:|--:|--:|--:|--:|--:|--:|",
    ]
    for e in payload["rows"]:
        if e["status"] != "ok":
            lines.append(f"| {e['method']} | {e['shape']} | - | - | - | - | - | - | {_status(e)} |")
            continue
        interval = e["ratio_ci95"]
        ratio = f"{e['ratio']:.2f}x" + (f" [{interval[0]:.2f}-{interval[1]:.2f}]" if interval else " [too few pairs]")
        even = "never" if e["break_even_steps"] is None else f"{e['break_even_steps']:.0f}"
        lines.append(f"| {e['method']} | {e['shape']} | {_fmt(e['cold_compile_s'], '.1f')} | "
                     f"{_fmt(e['warm_compile_s'], '.1f')} | {_fmt(e['eager_ms'], '.1f')} | {_fmt(e['compiled_ms'], '.1f')} | "
                     f"{ratio} | {even} | {_fmt(e['net_saving_s'], '.1f')} |")
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
