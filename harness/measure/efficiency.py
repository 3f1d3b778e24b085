"""The efficiency sweep: time and peak memory of each attention method against sequence length.

For every length, scope ("core": the attention core alone; "layer": Q/K/V projections + core +
output projection, `harness.training.model.AttentionLayer`) and pass ("forward": inference, no autograd;
"forward_backward": a training step's forward and backward), the methods and the references
(`sdpa`, and `full` where it runs) are timed in interleaved repetitions, so a burst of noise from
other processes hits all of them alike. Each repetition gives one paired ratio per method and
reference; the row's `ratio_to_sdpa` / `ratio_to_full` is their geometric mean with the 95%
t interval of the mean log-ratio (harness/measure/timing.py `paired_ratio`). Repetitions go on
until every interval lies within +-`ci_target` (5%) of its ratio, or the group's time cap
(`rep_budget_s`) or `max_reps` ends them first: then the rows say `time_capped`. One extra,
profiled call per cell measures peak memory (see harness/measure/timing.py) and checks the time
budget.

`macs` is what the timed call executed, one forward pass: the formula of a data-independent
method, the count a data-dependent core reports for the timed input (`last_forward_macs`). Tree
methods (Treeformer TF/TC) appear twice, labelled by `tree`: "random" (the tree as initialised)
and "balanced" (hyperplanes through the medians of the keys, queries equal to the keys, so every
leaf holds n / 2^h of each; harness/measure/balanced_tree.py).

Failures are rows: a method that cannot run a setting is "unsupported" with the reason, one that
runs out of memory is "oom", one whose call exceeds the per-cell time budget is "timeout", and the
method is not tried at greater lengths in that scope and pass (their rows say why). On the CPU a
real out-of-memory kills the process instead of raising, so a cell whose peak memory, extrapolated
from shorter lengths, would exceed the memory limit is recorded as "oom" without running; when no
shorter length was swept, short probe lengths are measured first to extrapolate from.
"""

from __future__ import annotations

import gc
import json
import math
import os
import sys
import time
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Callable, Optional

import torch

from bench_common import BenchError, check_option_keys
from harness.measure.env import environment
from harness.training.model import AttentionLayer, ModelConfig, check_core_output
from harness.measure.balanced_tree import balance_through_medians
from harness.measure.timing import extra_memory_mb, paired_ratio, summarize, time_block
from methods import AttentionMethod, create_attention, get_attention_class, load_plugin
from methods.base import unsupported_reason
from methods.treeformer.core import TreeAttention

DEFAULT_SEQ_LENS = [256 * 2**i for i in range(7)]  # 256 ... 16384
# The main job's short sweep (bare `run_benchmark.py`): the core alone, forward, to n=4096, about two
# minutes on 2 CPU cores beside the quick suite.
MAIN_JOB_SEQ_LENS = [256 * 2**i for i in range(5)]  # 256 ... 4096
MAIN_JOB_OPTIONS = {"scopes": ["core"], "passes": ["forward"], "rep_budget_s": 2.0, "cell_budget_s": 10.0}
BASELINE = "sdpa"  # every sweep times it: ratio_to_sdpa is part of each row
REFERENCES = (BASELINE, "full")  # full joins too, for ratio_to_full, at the lengths where it runs
TREES = ("random", "balanced")  # the two trees a tree method is timed with
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
    min_reps: int = 3  # at least this many interleaved repetitions per cell (an interval needs 2)
    max_reps: int = 50
    rep_budget_s: float = 6.0  # time cap of the repetitions of one (length, scope, pass)
    ci_target: float = 0.05  # repeat until every ratio's 95% interval is within +-5% of it
    probe_len: int = 256  # with no shorter length swept, limits are predicted from probes at 256 and 1024
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
    for key in ("num_heads", "head_dim", "min_reps", "max_reps", "num_threads", "probe_len"):
        if getattr(result, key) is not None and getattr(result, key) < 1:
            raise BenchError(f"efficiency option '{key}': expected a positive integer, got {getattr(result, key)}")
    if not result.ci_target > 0:
        raise BenchError(f"efficiency option 'ci_target': expected a positive fraction, got {result.ci_target}")
    if result.max_reps < result.min_reps:
        raise BenchError(f"efficiency option 'max_reps' ({result.max_reps}) is below 'min_reps' ({result.min_reps})")
    return result


@dataclass
class Case:
    """One method at one (length, scope, pass), built and ready to call."""

    method: str
    run: Callable[[], None]
    core: torch.nn.Module
    seq_len: int
    projection_macs: int  # Q, K, V and output projections (layer scope), else 0

    def macs(self) -> float:
        """Forward MACs the timed input executes, one example; read after a call of `run`.

        A data-dependent core reports what its last forward executed (the same in a training
        forward: the estimator's extra work is backward-only); the others cost `macs(n)`.
        """
        reported = self.core.last_forward_macs()
        return self.projection_macs + (reported[0] if reported is not None else self.core.macs(self.seq_len))


def is_tree_method(method: str) -> bool:
    return issubclass(get_attention_class(method), TreeAttention)


def build_case(
    method: str, seq_len: int, scope: str, pass_: str, opts: EfficiencyOptions, device: str, tree: Optional[str] = None
) -> Case:
    """The timed call; `tree` "balanced" first balances a tree method's routing on these inputs."""
    torch.manual_seed(0)
    heads, head_dim, width = opts.num_heads, opts.head_dim, opts.num_heads * opts.head_dim
    dtype = DTYPES[opts.dtype]
    core = create_attention(
        method, num_heads=heads, head_dim=head_dim, max_seq_len=seq_len, **opts.attention_options.get(method, {})
    )
    if scope == "core":
        module: torch.nn.Module = CheckedCore(core)
        inputs: tuple = tuple(torch.randn(3, 1, heads, seq_len, head_dim, device=device, dtype=dtype).unbind(0))
        out_shape = (1, heads, seq_len, head_dim)
        projections = 0
    else:
        config = ModelConfig(emb_dim=width, qkv_dim=width, num_heads=heads, max_seq_len=seq_len, attention=method)
        module = AttentionLayer(config, core)
        inputs = (torch.randn(1, seq_len, width, device=device, dtype=dtype), None)  # (x, key_padding_mask)
        out_shape = (1, seq_len, width)
        projections = 4 * seq_len * width * width  # Q, K, V and output projections
    module = module.to(device=device, dtype=dtype)
    if tree == "balanced":
        inputs = _balance(module, core, scope, inputs)

    if pass_ == "forward":
        module.eval()

        def run() -> None:
            with torch.no_grad():
                module(*inputs)

        return Case(method, run, core, seq_len, projections)

    module.train()
    leaves = [t.requires_grad_() for t in inputs if t is not None] + list(module.parameters())
    grad_out = torch.randn(out_shape, device=device, dtype=dtype)

    def run() -> None:
        for leaf in leaves:
            leaf.grad = None
        module(*inputs).backward(grad_out)

    return Case(method, run, core, seq_len, projections)


class CheckedCore(torch.nn.Module):
    """The core called alone, its first output checked as the model checks it (a transposed or
    wrongly sized plugin output is an error row, never a timed "ok")."""

    def __init__(self, core: AttentionMethod):
        super().__init__()
        self.core = core
        self.checked = False

    def forward(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        out = self.core(q, k, v)
        if not self.checked:
            check_core_output(self.core, out, v)
            self.checked = True
        return out


@torch.no_grad()
def _balance(module: torch.nn.Module, core: TreeAttention, scope: str, inputs: tuple) -> tuple:
    """Queries equal to keys (core: k = q; layer: the key projection copies the query one), and
    the tree's hyperplanes through their medians: every leaf gets n / 2^h queries and keys."""
    if scope == "core":
        q, _, v = inputs
        inputs = (q, q.clone(), v)
        keys = q
    else:
        qkv = module.qkv.weight  # rows: queries, keys, values
        width = qkv.shape[0] // 3
        qkv[width : 2 * width] = qkv[:width]
        seen: list[torch.Tensor] = []
        hook = core.register_forward_pre_hook(lambda _, args: seen.append(args[1]))  # args: q, k, v
        module.eval()(*inputs)
        hook.remove()
        keys = seen[0]
    balance_through_medians(core.tree, keys)
    return inputs


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


Entry = tuple[str, Optional[str]]  # (method, tree): tree "random"/"balanced" for tree methods, else None


def entries_of(methods: list[str]) -> list[Entry]:
    """The timed entries: each method once, a tree method once per tree."""
    return [(m, tree) for m in methods for tree in (TREES if is_tree_method(m) else (None,))]


def label(entry: Entry) -> str:
    method, tree = entry
    return f"{method}[{tree}]" if tree else method


def run_efficiency(
    methods: list[str], seq_lens: list[int], out_dir: Path, device: str, plugins: list[str], options: dict
) -> Path:
    """Runs the sweep and writes `<out_dir>/efficiency.json` (after every length, so an
    interrupted sweep keeps what it measured); returns its path."""
    for plugin in plugins:
        load_plugin(plugin)
    opts = parse_options(dict(options))
    device = _check_device(device)
    methods = list(REFERENCES) + [m for m in dict.fromkeys(methods) if m not in REFERENCES]
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


def failed_rows(path: Path) -> list[dict]:
    """Rows of an efficiency.json whose cell raised an error (oom, timeout, unsupported are results)."""
    return [row for row in json.loads(Path(path).read_text())["rows"] if row["status"] == "error"]


def _sweep(
    methods: list[str], seq_lens: list[int], out_dir: Path, device: str, opts: EfficiencyOptions,
    memory_limit: Optional[float],
) -> Path:
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / "efficiency.json"
    settings = {**{f.name: getattr(opts, f.name) for f in fields(opts)}, "memory_limit_mb": memory_limit,
                "seq_lens": list(seq_lens), "methods": methods,
                "ratio": "geometric mean of per-repetition ratios; ci95: Student t interval of the mean log-ratio"}
    result = {"env": environment(device), "settings": settings, "rows": []}
    entries = entries_of(methods)
    histories = {(e, s, p): History() for e in entries for s in opts.scopes for p in opts.passes}
    for seq_len in sorted(seq_lens):
        for scope in opts.scopes:
            for pass_ in opts.passes:
                print(f"efficiency n={seq_len} {scope} {pass_}: timing {', '.join(map(label, entries))}",
                      file=sys.stderr, flush=True)
                group = {e: histories[(e, scope, pass_)] for e in entries}
                rows = _measure_group(group, seq_len, scope, pass_, opts, device, memory_limit)
                result["rows"].extend(rows)
                _log_group(seq_len, scope, pass_, rows)
        _write_json(path, result)
    return path


def _measure_group(
    histories: dict[Entry, History], seq_len: int, scope: str, pass_: str, opts: EfficiencyOptions,
    device: str, memory_limit: Optional[float],
) -> list[dict]:
    """All entries at one (length, scope, pass): first calls, then interleaved repetitions."""
    rows: dict[Entry, dict] = {}
    cases: dict[Entry, Case] = {}
    first_seconds: dict[Entry, float] = {}
    for entry, history in histories.items():
        method, tree = entry
        row = rows[entry] = _row(method, tree, seq_len, scope, pass_)
        skip = _skip_reason(entry, history, seq_len, scope, pass_, opts, device, memory_limit)
        if skip:
            row["status"], row["reason"] = skip
            continue
        try:
            case = build_case(method, seq_len, scope, pass_, opts, device, tree)
            row["peak_memory_mb"], seconds = extra_memory_mb(case.run, device)
            row["macs"] = case.macs()
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
        cases[entry], first_seconds[entry] = case, seconds

    numbers = {e: int(min(100, max(1, round(opts.block_s / max(s, 1e-9))))) for e, s in first_seconds.items()}
    times: dict[Entry, list[float]] = {e: [] for e in cases}
    order = list(cases)
    started, reps, capped = time.perf_counter(), 0, False
    while order:
        shift = reps % len(order)  # rotate who goes first, so no method always follows another
        for entry in order[shift:] + order[:shift]:
            if entry not in cases:
                continue
            try:
                times[entry].append(time_block(cases[entry].run, numbers[entry]))
            except Exception as err:
                rows[entry]["status"], rows[entry]["reason"] = _failure(err)
                del cases[entry]
        reps += 1
        if reps >= opts.min_reps and _intervals_within(times, rows, opts.ci_target):
            break
        if reps >= opts.min_reps and (reps >= opts.max_reps or time.perf_counter() - started > opts.rep_budget_s):
            capped = True
            break
    del cases
    _free_memory(device)

    references = {ref: _reference_times(times, rows, ref) for ref in REFERENCES}
    for entry, samples in times.items():
        row = rows[entry]
        if row["status"] != "ok" or not samples:
            continue
        measurement = summarize(f"{label(entry)} n={seq_len} {scope} {pass_}", samples, numbers[entry])
        row["time_ms"] = measurement.median * 1e3
        row["time_iqr_ms"] = measurement.iqr * 1e3
        row["reps"] = len(samples)
        row["time_capped"] = capped
        for ref, reference in references.items():
            if reference is not None:
                ratio, interval = paired_ratio(samples, reference)
                row[f"ratio_to_{ref}"] = ratio
                row[f"ratio_to_{ref}_ci95"] = list(interval) if interval else None
        histories[entry].points.append((seq_len, measurement.median, row["peak_memory_mb"]))
    return list(rows.values())


def _reference_times(times: dict[Entry, list[float]], rows: dict[Entry, dict], reference: str) -> Optional[list[float]]:
    entry = (reference, None)
    return times.get(entry) if entry in rows and rows[entry]["status"] == "ok" and times.get(entry) else None


def _intervals_within(times: dict[Entry, list[float]], rows: dict[Entry, dict], target: float) -> bool:
    """Whether every entry's 95% interval of its ratio to each reference lies within +-target."""
    for ref in REFERENCES:
        reference = _reference_times(times, rows, ref)
        if reference is None:
            continue
        for entry, samples in times.items():
            if entry == (ref, None) or rows[entry]["status"] != "ok":
                continue
            ratio, interval = paired_ratio(samples, reference)
            if interval is None or interval[1] > ratio * (1 + target) or interval[0] < ratio * (1 - target):
                return False
    return True


def _row(method: str, tree: Optional[str], seq_len: int, scope: str, pass_: str) -> dict:
    return {"method": method, "tree": tree, "seq_len": seq_len, "scope": scope, "pass": pass_, "status": "ok",
            "time_ms": None, "reps": None, "time_capped": None,
            "ratio_to_sdpa": None, "ratio_to_sdpa_ci95": None, "ratio_to_full": None, "ratio_to_full_ci95": None,
            "peak_memory_mb": None, "macs": None, "reason": None}


def _skip_reason(
    entry: Entry, history: History, seq_len: int, scope: str, pass_: str, opts: EfficiencyOptions, device: str,
    memory_limit: Optional[float],
) -> Optional[tuple[str, str]]:
    """(status, reason) when this cell must not run, from capabilities and shorter lengths (or probes)."""
    method, tree = entry
    reason = unsupported_reason(get_attention_class(method), seq_len, seq_len, device, has_padding=False)
    if reason:
        return "unsupported", reason
    if not history.points and not history.stopped:
        _probe(entry, history, seq_len, scope, pass_, opts, device)
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


def _probe(entry: Entry, history: History, seq_len: int, scope: str, pass_: str, opts: EfficiencyOptions,
           device: str) -> None:
    """Seeds an empty history with one call at the probe lengths (probe_len and 4x, those at most
    half of seq_len), so a first length far beyond what runs is predicted instead of tried."""
    method, tree = entry
    for probe_len in (opts.probe_len, 4 * opts.probe_len):
        if 2 * probe_len > seq_len:
            return
        print(f"efficiency: probing {label(entry)} at n={probe_len} to predict n={seq_len}", file=sys.stderr, flush=True)
        try:
            case = build_case(method, probe_len, scope, pass_, opts, device, tree)
            mb, seconds = extra_memory_mb(case.run, device)
        except Exception as err:
            status, reason = _failure(err)
            history.stopped = (status, f"skipped: the probe at length {probe_len} failed: {reason}")
            return
        finally:
            _free_memory(device)
        history.points.append((probe_len, seconds, mb))


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
        name = label((row["method"], row["tree"]))
        if row["status"] != "ok":
            cells.append(f"{name} {row['status'].upper()}")
            continue
        ratio = ""
        if row["ratio_to_sdpa_ci95"] is not None:
            low, high = row["ratio_to_sdpa_ci95"]
            ratio = f" ({row['ratio_to_sdpa']:.2f}x sdpa, 95% {low:.2f}-{high:.2f})"
        cells.append(f"{name} {row['time_ms']:.1f} ms{ratio}")
    capped = any(row["time_capped"] for row in rows)
    print(f"efficiency n={seq_len} {scope} {pass_}{' (time-capped)' if capped else ''}: " + ", ".join(cells),
          file=sys.stderr, flush=True)
