"""Which cells must not run: what shorter lengths (or probes) predict about time and memory.

A cell whose call would run far past the per-cell budget cannot be stopped from Python once torch
is inside one kernel (Ctrl-C then waits for it too), and on the CPU a real out-of-memory kills the
process instead of raising. So a cell is predicted before it runs, from the measured lengths of
the same method, scope and pass; a length more than twice beyond what was measured is first
approached by probe calls at probe_len * 4^k, each itself predicted to fit, so the prediction
never leaps more than about 8x in length. Failures and skips become rows, and a method that failed
at one length is not tried at greater lengths in that scope and pass (their rows say why).
"""

from __future__ import annotations

import gc
import math
import sys
from dataclasses import dataclass, field
from typing import Optional

import torch

from harness.measure.efficiency_cases import Entry, build_case
from harness.measure.efficiency_options import EfficiencyOptions
from harness.measure.timing import extra_memory_mb
from harness.training.failures import classify_exception
from methods import get_attention_class
from methods.base import unsupported_reason

Skip = tuple[str, str]  # (status, reason)


@dataclass
class History:
    """What earlier lengths of one (entry, scope, pass) tell about the next one."""

    points: list = field(default_factory=list)  # (seq_len, seconds per call, peak MiB), by length
    stopped: Optional[Skip] = None  # once a length failed

    def add(self, seq_len: int, seconds: float, peak_mb: float) -> None:
        self.points = sorted([p for p in self.points if p[0] != seq_len] + [(seq_len, seconds, peak_mb)])

    def extrapolate(self, seq_len: int, column: int) -> Optional[float]:
        """Value at seq_len from the longest measured lengths below it, growing as n^e with e from
        the last two, clamped to [1, 2] (linear to quadratic); with one length, quadratic (the worst case)."""
        below = [p for p in self.points if p[0] <= seq_len]
        if not below:
            return None
        n1, value1 = below[-1][0], below[-1][column]
        exponent = 2.0
        if len(below) >= 2:
            n0, value0 = below[-2][0], below[-2][column]
            if value0 > 0 and value1 > 0 and n1 != n0:
                exponent = min(2.0, max(1.0, math.log(value1 / value0) / math.log(n1 / n0)))
        return value1 * (seq_len / n1) ** exponent


def skip_reason(entry: Entry, history: History, seq_len: int, scope: str, pass_: str, opts: EfficiencyOptions,
                device: str, memory_limit: Optional[float]) -> Optional[Skip]:
    """(status, reason) when this cell must not run, from capabilities and shorter lengths (or probes)."""
    reason = unsupported_reason(get_attention_class(entry.method.attention), seq_len, seq_len, device,
                                has_padding=False)
    if reason:
        return "unsupported", reason
    if history.stopped:
        return history.stopped
    _probe(entry, history, seq_len, scope, pass_, opts, device, memory_limit)
    return history.stopped or _predicted_over(history, seq_len, opts, memory_limit)


def _predicted_over(history: History, seq_len: int, opts: EfficiencyOptions, memory_limit: Optional[float]
                    ) -> Optional[Skip]:
    """Marks the history stopped when the length is predicted over the time budget or memory limit."""
    seconds = history.extrapolate(seq_len, column=1)
    if seconds is not None and seconds > opts.cell_budget_s:
        history.stopped = ("timeout", f"skipped: extrapolated {seconds:.1f} s per call at length {seq_len} "
                                      f"exceeds the cell budget of {opts.cell_budget_s:g} s")
    megabytes = history.extrapolate(seq_len, column=2)
    if not history.stopped and memory_limit is not None and megabytes is not None and megabytes > memory_limit:
        history.stopped = ("oom", f"skipped: extrapolated peak {megabytes:.0f} MiB at length {seq_len} exceeds "
                                  f"the memory limit of {memory_limit:.0f} MiB (a CPU out-of-memory kills the process)")
    return history.stopped


def _probe(entry: Entry, history: History, seq_len: int, scope: str, pass_: str, opts: EfficiencyOptions,
           device: str, memory_limit: Optional[float]) -> None:
    """One call at each probe length between the longest measured one and seq_len / 2, shortest
    first; a probe predicted over the limits stops the ladder (and the method: longer is worse)."""
    measured = max((p[0] for p in history.points), default=0)
    probe_len = opts.probe_len
    while 2 * probe_len <= seq_len:
        if probe_len > measured:
            if _predicted_over(history, probe_len, opts, memory_limit):
                return
            print(f"efficiency: probing {entry.label} at n={probe_len} to predict n={seq_len}", file=sys.stderr,
                  flush=True)
            try:
                case = build_case(entry, probe_len, scope, pass_, opts, device)
                megabytes, seconds = extra_memory_mb(case.run, device)
            except Exception as err:
                status, reason = classify_exception(err)
                history.stopped = (status, f"skipped: the probe at length {probe_len} failed: {reason}")
                return
            finally:
                free_memory(device)
            history.add(probe_len, seconds, megabytes)
        probe_len *= 4


def free_memory(device: str) -> None:
    gc.collect()
    if device.startswith("cuda"):
        torch.cuda.empty_cache()


def default_memory_limit_mb(device: str) -> Optional[float]:
    """A quarter of the memory available now (CPU only: a CUDA out-of-memory raises and is a row)."""
    if device.startswith("cuda"):
        return None
    try:
        with open("/proc/meminfo") as meminfo:
            for line in meminfo:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) / 1024 / 4
    except OSError:
        pass
    return 1024.0  # unknown platform: assume a small machine
