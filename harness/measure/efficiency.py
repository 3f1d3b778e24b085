"""The efficiency sweep: time and peak memory of each attention method against sequence length.

For every length, scope ("core": the attention core alone; "layer": Q/K/V projections + core +
output projection, `harness.training.model.AttentionLayer`) and pass ("forward": inference, no autograd;
"forward_backward": a training step's forward and backward), the methods are timed in
interleaved repetitions, so a burst of noise from other processes hits all of them alike, and
each method's ratio to `sdpa` is the median of per-repetition ratios. One extra, profiled call
per cell measures peak memory (see harness/measure/timing.py) and checks the time budget.

Failures are rows: a method that cannot run a setting is "unsupported" with the reason, one that
runs out of memory is "oom", one whose call exceeds the per-cell time budget is "timeout", and the
method is not tried at greater lengths in that scope and pass (their rows say why). On the CPU a
real out-of-memory kills the process instead of raising, so a cell whose peak memory, extrapolated
from the shorter lengths, would exceed the memory limit is recorded as "oom" without running.
"""

from __future__ import annotations

import gc
import json
import math
import os
import sys
from dataclasses import dataclass, field, fields
from pathlib import Path
from statistics import median
from typing import Callable, Optional

import torch

from bench_common import BenchError, check_option_keys
from harness.measure.env import environment
from harness.training.model import AttentionLayer, ModelConfig
from harness.measure.timing import peak_memory_mb, summarize, time_block
from methods import create_attention, get_attention_class, load_plugin
from methods.base import unsupported_reason

DEFAULT_SEQ_LENS = [256 * 2**i for i in range(7)]  # 256 ... 16384
BASELINE = "sdpa"  # every sweep times it: ratio_to_sdpa is part of each row
SCOPES = ("core", "layer")
PASSES = ("forward", "forward_backward")
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


@dataclass
class EfficiencyOptions:
    """Sweep settings (the `options` dict of `run_efficiency`); defaults keep a 2-core CPU sweep
    to 256..16384 within about 15 minutes."""

    num_heads: int = 4
    head_dim: int = 64
    dtype: str = "float32"
    scopes: list = field(default_factory=lambda: list(SCOPES))
    passes: list = field(default_factory=lambda: list(PASSES))
    min_reps: int = 3  # at least this many interleaved repetitions per cell, for a median
    max_reps: int = 10
    rep_budget_s: float = 4.0  # the repetitions of one (length, scope, pass) aim at this long
    block_s: float = 0.05  # calls faster than this are timed in blocks of about this long
    cell_budget_s: float = 20.0  # one call slower than this (measured or extrapolated): timeout
    memory_limit_mb: Optional[float] = None  # CPU: extrapolated peaks above it are "oom"; None = 1/4 of free RAM
    num_threads: Optional[int] = None  # torch intra-op threads for the sweep; None = as the process has them
    attention_options: dict = field(default_factory=dict)  # method -> its constructor options


OPTIONAL_TYPES = {"memory_limit_mb": float, "num_threads": int}  # options whose default is None


def parse_options(options: dict) -> EfficiencyOptions:
    """Checks option names, types and values; a wrong one is a one-line BenchError."""
    defaults = EfficiencyOptions()
    check_option_keys("efficiency options", options, [f.name for f in fields(EfficiencyOptions)])
    parsed = {}
    for key, value in options.items():
        expected = type(getattr(defaults, key)) if getattr(defaults, key) is not None else OPTIONAL_TYPES[key]
        if expected is float and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)
        if value is not None and (not isinstance(value, expected) or isinstance(value, bool)):
            raise BenchError(f"efficiency option '{key}': expected {expected.__name__}, got {value!r}")
        parsed[key] = value
    result = EfficiencyOptions(**parsed)
    for key, allowed in (("scopes", SCOPES), ("passes", PASSES)):
        bad = [v for v in getattr(result, key) if v not in allowed]
        if bad or not getattr(result, key):
            raise BenchError(f"efficiency option '{key}': expected a non-empty subset of {list(allowed)}, got {getattr(result, key)!r}")
    if result.dtype not in DTYPES:
        raise BenchError(f"efficiency option 'dtype': expected one of {list(DTYPES)}, got {result.dtype!r}")
    for key in ("num_heads", "head_dim", "min_reps", "max_reps", "num_threads"):
        if getattr(result, key) is not None and getattr(result, key) < 1:
            raise BenchError(f"efficiency option '{key}': expected a positive integer, got {getattr(result, key)}")
    if result.max_reps < result.min_reps:
        raise BenchError(f"efficiency option 'max_reps' ({result.max_reps}) is below 'min_reps' ({result.min_reps})")
    return result


@dataclass
class Case:
    """One method at one (length, scope, pass), built and ready to call."""

    method: str
    run: Callable[[], None]
    macs: int  # forward MACs, one example (the method's formula, plus projections for a layer)


def build_case(method: str, seq_len: int, scope: str, pass_: str, opts: EfficiencyOptions, device: str) -> Case:
    torch.manual_seed(0)
    heads, head_dim, width = opts.num_heads, opts.head_dim, opts.num_heads * opts.head_dim
    dtype = DTYPES[opts.dtype]
    core = create_attention(
        method, num_heads=heads, head_dim=head_dim, max_seq_len=seq_len, **opts.attention_options.get(method, {})
    )
    macs = core.macs(seq_len)
    if scope == "core":
        module: torch.nn.Module = core
        inputs: tuple = tuple(torch.randn(3, 1, heads, seq_len, head_dim, device=device, dtype=dtype).unbind(0))
        out_shape = (1, heads, seq_len, head_dim)
    else:
        config = ModelConfig(emb_dim=width, qkv_dim=width, num_heads=heads, max_seq_len=seq_len, attention=method)
        module = AttentionLayer(config, core)
        inputs = (torch.randn(1, seq_len, width, device=device, dtype=dtype), None)  # (x, key_padding_mask)
        out_shape = (1, seq_len, width)
        macs += 4 * seq_len * width * width  # Q, K, V and output projections
    module = module.to(device=device, dtype=dtype)

    if pass_ == "forward":
        module.eval()

        def run() -> None:
            with torch.no_grad():
                module(*inputs)

        return Case(method, run, macs)

    module.train()
    leaves = [t.requires_grad_() for t in inputs if t is not None] + list(module.parameters())
    grad_out = torch.randn(out_shape, device=device, dtype=dtype)

    def run() -> None:
        for leaf in leaves:
            leaf.grad = None
        module(*inputs).backward(grad_out)

    return Case(method, run, macs)


@dataclass
class History:
    """What earlier lengths of one (method, scope, pass) tell about the next one."""

    points: list = field(default_factory=list)  # (seq_len, seconds per call, peak MiB)
    stopped: Optional[tuple[str, str]] = None  # (status, reason) once a length failed

    def extrapolate(self, seq_len: int, column: int) -> Optional[float]:
        """Value at seq_len, growing as n^e with e from the last two lengths, clamped to [1, 2]
        (linear to quadratic); with one earlier length, quadratic (the worst case)."""
        if not self.points:
            return None
        n1, value1 = self.points[-1][0], self.points[-1][column]
        exponent = 2.0
        if len(self.points) >= 2:
            n0, value0 = self.points[-2][0], self.points[-2][column]
            if value0 > 0 and value1 > 0 and n1 != n0:
                exponent = min(2.0, max(1.0, math.log(value1 / value0) / math.log(n1 / n0)))
        return value1 * (seq_len / n1) ** exponent


def run_efficiency(
    methods: list[str], seq_lens: list[int], out_dir: Path, device: str, plugins: list[str], options: dict
) -> Path:
    """Runs the sweep and writes `<out_dir>/efficiency.json` (after every length, so an
    interrupted sweep keeps what it measured); returns its path."""
    for plugin in plugins:
        load_plugin(plugin)
    opts = parse_options(dict(options))
    device = _check_device(device)
    methods = [BASELINE] + [m for m in dict.fromkeys(methods) if m != BASELINE]
    for method in methods:
        get_attention_class(method)  # unknown names fail before anything runs
    check_option_keys("efficiency option 'attention_options'", opts.attention_options, methods)
    if not seq_lens or any(not isinstance(n, int) or n < 1 for n in seq_lens):
        raise BenchError(f"efficiency sequence lengths must be positive integers, got {seq_lens!r}")
    memory_limit = opts.memory_limit_mb
    if memory_limit is None and not device.startswith("cuda"):
        memory_limit = _available_memory_mb() / 4

    threads_before = torch.get_num_threads()
    if opts.num_threads is not None:
        torch.set_num_threads(opts.num_threads)
    try:
        return _sweep(methods, seq_lens, Path(out_dir), device, opts, memory_limit)
    finally:
        torch.set_num_threads(threads_before)


def _sweep(
    methods: list[str], seq_lens: list[int], out_dir: Path, device: str, opts: EfficiencyOptions,
    memory_limit: Optional[float],
) -> Path:
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / "efficiency.json"
    settings = {**{f.name: getattr(opts, f.name) for f in fields(opts)}, "memory_limit_mb": memory_limit,
                "seq_lens": list(seq_lens), "methods": methods}
    result = {"env": environment(device), "settings": settings, "rows": []}
    histories = {(m, s, p): History() for m in methods for s in opts.scopes for p in opts.passes}
    for seq_len in sorted(seq_lens):
        for scope in opts.scopes:
            for pass_ in opts.passes:
                group = {m: histories[(m, scope, pass_)] for m in methods}
                rows = _measure_group(group, seq_len, scope, pass_, opts, device, memory_limit)
                result["rows"].extend(rows)
                _log_group(seq_len, scope, pass_, rows)
        _write_json(path, result)
    return path


def _measure_group(
    histories: dict[str, History], seq_len: int, scope: str, pass_: str, opts: EfficiencyOptions,
    device: str, memory_limit: Optional[float],
) -> list[dict]:
    """All methods at one (length, scope, pass): first calls, then interleaved repetitions."""
    rows: dict[str, dict] = {}
    cases: dict[str, Case] = {}
    first_seconds: dict[str, float] = {}
    for method, history in histories.items():
        row = rows[method] = _row(method, seq_len, scope, pass_)
        skip = _skip_reason(method, history, seq_len, opts, device, memory_limit)
        if skip:
            row["status"], row["reason"] = skip
            continue
        try:
            case = build_case(method, seq_len, scope, pass_, opts, device)
            row["macs"] = case.macs
            row["peak_memory_mb"], seconds = peak_memory_mb(case.run, device)
        except Exception as err:  # a failing method becomes a row; the sweep goes on
            row["status"], row["reason"] = _failure(err)
            if row["status"] == "oom":
                history.stopped = ("oom", f"skipped: out of memory at length {seq_len}")
            _free_memory(device)
            continue
        if seconds > opts.cell_budget_s:
            row["status"] = "timeout"
            row["reason"] = f"one call took {seconds:.1f} s, over the cell budget of {opts.cell_budget_s:g} s"
            history.stopped = ("timeout", f"skipped: timed out at length {seq_len}")
            continue
        cases[method], first_seconds[method] = case, seconds

    numbers = {m: int(min(100, max(1, round(opts.block_s / max(s, 1e-9))))) for m, s in first_seconds.items()}
    reps = int(min(opts.max_reps, max(opts.min_reps, opts.rep_budget_s // max(sum(first_seconds.values()), 1e-9))))
    times: dict[str, list[float]] = {m: [] for m in cases}
    order = list(cases)
    for rep in range(reps if order else 0):
        shift = rep % len(order)  # rotate who goes first, so no method always follows another
        for method in order[shift:] + order[:shift]:
            if method not in cases:
                continue
            try:
                times[method].append(time_block(cases[method].run, numbers[method]))
            except Exception as err:
                rows[method]["status"], rows[method]["reason"] = _failure(err)
                del cases[method]
    del cases
    _free_memory(device)

    baseline = times.get(BASELINE) if rows[BASELINE]["status"] == "ok" else None
    for method, samples in times.items():
        row = rows[method]
        if row["status"] != "ok" or not samples:
            continue
        measurement = summarize(f"{method} n={seq_len} {scope} {pass_}", samples, numbers[method])
        row["time_ms"] = measurement.median * 1e3
        row["time_iqr_ms"] = measurement.iqr * 1e3
        row["reps"] = len(samples)
        if baseline and len(baseline) == len(samples):
            row["ratio_to_sdpa"] = median(t / b for t, b in zip(samples, baseline))
        histories[method].points.append((seq_len, measurement.median, row["peak_memory_mb"]))
    return list(rows.values())


def _row(method: str, seq_len: int, scope: str, pass_: str) -> dict:
    return {"method": method, "seq_len": seq_len, "scope": scope, "pass": pass_, "status": "ok",
            "time_ms": None, "ratio_to_sdpa": None, "peak_memory_mb": None, "macs": None, "reason": None}


def _skip_reason(
    method: str, history: History, seq_len: int, opts: EfficiencyOptions, device: str, memory_limit: Optional[float]
) -> Optional[tuple[str, str]]:
    """(status, reason) when this cell must not run, from capabilities and earlier lengths."""
    reason = unsupported_reason(get_attention_class(method), seq_len, seq_len, device, has_padding=False)
    if reason:
        return "unsupported", reason
    if history.stopped:
        return history.stopped
    predicted_seconds = history.extrapolate(seq_len, column=1)
    if predicted_seconds is not None and predicted_seconds > opts.cell_budget_s:
        history.stopped = ("timeout", f"skipped: extrapolated {predicted_seconds:.1f} s per call at length {seq_len} "
                                      f"exceeds the cell budget of {opts.cell_budget_s:g} s")
        return history.stopped
    predicted_mb = history.extrapolate(seq_len, column=2)
    if memory_limit is not None and predicted_mb is not None and predicted_mb > memory_limit:
        history.stopped = ("oom", f"skipped: extrapolated peak {predicted_mb:.0f} MiB at length {seq_len} exceeds "
                                  f"the memory limit of {memory_limit:.0f} MiB (a CPU out-of-memory kills the process)")
        return history.stopped
    return None


def _failure(err: Exception) -> tuple[str, str]:
    message = " ".join(str(err).split())[:300]
    out_of_memory = isinstance(err, torch.cuda.OutOfMemoryError) or (
        isinstance(err, RuntimeError) and ("out of memory" in message or "can't allocate memory" in message)
    )
    if isinstance(err, MemoryError) or out_of_memory:
        return "oom", message
    return "error", f"{type(err).__name__}: {message}"


def _free_memory(device: str) -> None:
    gc.collect()
    if device.startswith("cuda"):
        torch.cuda.empty_cache()


def _check_device(device: str) -> str:
    device = str(device)
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise BenchError(f"--device {device}: CUDA is not available on this machine")
    if not (device == "cpu" or device.startswith("cuda")):
        raise BenchError(f"--device: expected 'cpu' or 'cuda[:N]', got {device!r}")
    return device


def _available_memory_mb() -> float:
    try:
        with open("/proc/meminfo") as meminfo:
            for line in meminfo:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 4096.0  # unknown platform: assume a small machine


def _write_json(path: Path, data: dict) -> None:
    """Atomic: a reader never sees a half-written file."""
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data, indent=1))
    os.replace(tmp, path)


def _log_group(seq_len: int, scope: str, pass_: str, rows: list[dict]) -> None:
    cells = []
    for row in rows:
        if row["status"] != "ok":
            cells.append(f"{row['method']} {row['status'].upper()}")
        else:
            ratio = f" ({row['ratio_to_sdpa']:.2f}x)" if row["ratio_to_sdpa"] is not None else ""
            cells.append(f"{row['method']} {row['time_ms']:.1f} ms{ratio}")
    print(f"efficiency n={seq_len} {scope} {pass_}: " + ", ".join(cells), file=sys.stderr, flush=True)
