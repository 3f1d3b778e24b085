"""What an efficiency sweep times and how: its settings, checked once, and the timed methods.

A timed method is a label (what tables show: a suite variant's label, or a registry name), the
registry name of its attention core and that core's options; a suite's variants bring their own
options (an ablation's tree heights), and `--set model.attention_options.KEY=VALUE` adds to every
named method's, as it does for `run`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field, fields
from typing import Any, Optional

import torch

from bench_common import BenchError, check_option_keys

DEFAULT_SEQ_LENS = [256 * 2**i for i in range(7)]  # 256 ... 16384
# The main job's short sweep (bare `run_benchmark.py`): the core alone, forward, to n=4096 (about two
# minutes on 2 CPU cores with three repetitions at 4096; ten are required there now, not yet re-timed).
MAIN_JOB_SEQ_LENS = [256 * 2**i for i in range(5)]  # 256 ... 4096
MAIN_JOB_OPTIONS = {"scopes": ["core"], "passes": ["forward"], "rep_budget_s": 2.0, "cell_budget_s": 10.0}
SCOPES = ("core", "layer")
PASSES = ("forward", "forward_backward")
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


@dataclass(frozen=True)
class TimedMethod:
    """One method as the sweep times it; `options_json` (canonical JSON) keeps it hashable."""

    label: str
    attention: str
    options_json: str = "{}"

    @classmethod
    def of(cls, label: str, attention: Optional[str] = None, options: Optional[dict] = None) -> "TimedMethod":
        return cls(label, attention or label, json.dumps(options or {}, sort_keys=True))

    @property
    def options(self) -> dict[str, Any]:
        return json.loads(self.options_json)


BASELINE = TimedMethod.of("sdpa")  # every sweep times it: ratio_to_sdpa is part of each row
REFERENCES = (BASELINE, TimedMethod.of("full"))  # full joins too, for ratio_to_full, where it runs


@dataclass
class EfficiencyOptions:
    """Sweep settings (the `options` dict of `run_efficiency`, `--set efficiency.KEY=VALUE`).
    The ten-repetition floor at long lengths makes a default sweep to 16384 take longer than the
    15 minutes it took with three (not yet measured on an idle machine)."""

    num_heads: int = 4
    head_dim: int = 64
    dtype: str = "float32"
    scopes: list = field(default_factory=lambda: list(SCOPES))
    passes: list = field(default_factory=lambda: list(PASSES))
    min_reps: int = 3  # at least this many interleaved repetitions per cell (an interval needs 2)
    long_len: int = 4096  # from this length on, at least long_min_reps repetitions: the long cells
    long_min_reps: int = 10  # are the noisy ones, and the claims are made there
    max_reps: int = 50
    rep_budget_s: float = 6.0  # time cap of the repetitions of one (length, scope, pass), past the minimum
    ci_target: float = 0.05  # repeat until every ratio's 95% interval is within +-5% of it
    probe_len: int = 256  # far beyond what was measured, limits are predicted from probes probe_len * 4^k
    block_s: float = 0.05  # calls faster than this are timed in blocks of about this long
    cell_budget_s: float = 20.0  # one call slower than this (measured or extrapolated): timeout
    memory_limit_mb: Optional[float] = None  # CPU: extrapolated peaks above it are "oom"; None = 1/4 of free RAM
    num_threads: Optional[int] = None  # torch intra-op threads for the sweep; None = as the process has them

    def min_reps_at(self, seq_len: int) -> int:
        return max(self.min_reps, self.long_min_reps) if seq_len >= self.long_len else self.min_reps


OPTIONAL_TYPES = {"memory_limit_mb": float, "num_threads": int}  # options whose default is None
# Settings that decide what a number means: a resumed sweep whose settings differ here is refused.
# (The thread count is part of every row's key instead: another count adds rows.)
MEASUREMENT_SETTINGS = tuple(f.name for f in fields(EfficiencyOptions) if f.name not in (
    "scopes", "passes", "memory_limit_mb", "num_threads"))


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
    for key in ("num_heads", "head_dim", "min_reps", "long_len", "long_min_reps", "max_reps", "num_threads", "probe_len"):
        if getattr(result, key) is not None and getattr(result, key) < 1:
            raise BenchError(f"efficiency option '{key}': expected a positive integer, got {getattr(result, key)}")
    if not result.ci_target > 0:
        raise BenchError(f"efficiency option 'ci_target': expected a positive fraction, got {result.ci_target}")
    if result.max_reps < result.min_reps:
        raise BenchError(f"efficiency option 'max_reps' ({result.max_reps}) is below 'min_reps' ({result.min_reps})")
    return result


def check_seq_lens(seq_lens: list, opts: EfficiencyOptions) -> list[int]:
    """The lengths, sorted; a long one (>= long_len) needs max_reps >= long_min_reps."""
    if not seq_lens or any(not isinstance(n, int) or isinstance(n, bool) or n < 1 for n in seq_lens):
        raise BenchError(f"efficiency sequence lengths must be positive integers, got {seq_lens!r}")
    if max(seq_lens) >= opts.long_len and opts.max_reps < opts.long_min_reps:
        raise BenchError(f"efficiency option 'max_reps' ({opts.max_reps}) is below 'long_min_reps' "
                         f"({opts.long_min_reps}), the minimum at lengths >= {opts.long_len}")
    return sorted(set(seq_lens))
