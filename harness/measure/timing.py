"""Timers and peak-memory probes for one call of a function, on CPU or CUDA.

Peak memory is the *extra* memory a call allocates at its high point, above what was allocated
when it started (inputs, weights), in MiB:

- CUDA: `torch.cuda.max_memory_allocated` after a reset, minus the allocation at the start.
- CPU: torch has no allocator statistics for the CPU, and tracemalloc never sees tensor memory,
  so the call runs once under `torch.profiler` with `profile_memory=True`: the CPU allocator
  reports every tensor allocation and free (bytes, +/-) to it, and the running sum of those
  events in time order peaks at the call's extra memory. Process RSS is not used: glibc keeps
  freed pages mapped, so RSS both lags and over-reports what one call needs.
"""

from __future__ import annotations

import contextlib
import math
import os
import time
from typing import Callable, Iterator, Optional

import torch
from torch.utils import benchmark
from torch.utils.benchmark.utils.timer import timer as benchmark_clock

MIB = 2**20


def synchronize(device: str) -> None:
    if str(device).startswith("cuda"):
        torch.cuda.synchronize(device)


def time_block(fn: Callable[[], object], number: int) -> float:
    """Seconds per call over `number` back-to-back calls of `fn`.

    Uses torch.utils.benchmark's clock, which synchronises an accelerator at both ends. Not
    `Timer.timeit`: it adds two warm-up calls per measurement, tripling the cost of a slow cell,
    and runs with one thread unless told otherwise.
    """
    start = benchmark_clock()
    for _ in range(number):
        fn()
    return (benchmark_clock() - start) / number


def summarize(label: str, seconds_per_call: list[float], number: int) -> benchmark.Measurement:
    """torch.utils.benchmark's Measurement (median, IQR) of repeated block timings."""
    return benchmark.Measurement(
        number_per_run=number,
        raw_times=[t * number for t in seconds_per_call],
        task_spec=benchmark.utils.common.TaskSpec(stmt=label, setup="", num_threads=torch.get_num_threads()),
    )


def extra_memory_mb(fn: Callable[[], object], device: str) -> tuple[float, float]:
    """(extra peak MiB, seconds) of one call of `fn`: the most it allocated above what was allocated
    when it began, so weights and inputs are not counted (unlike the training loop's
    `run_peak_memory_mb`); the time includes the probe's overhead."""
    if str(device).startswith("cuda"):
        synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        start = torch.cuda.memory_allocated(device)
        began = time.perf_counter()
        fn()
        synchronize(device)
        seconds = time.perf_counter() - began
        return (torch.cuda.max_memory_allocated(device) - start) / MIB, seconds
    return _cpu_extra_memory_mb(fn)


def _cpu_extra_memory_mb(fn: Callable[[], object]) -> tuple[float, float]:
    from torch.profiler import ProfilerActivity, profile

    profiler = profile(activities=[ProfilerActivity.CPU], profile_memory=True)
    with _native_stderr_silenced():  # kineto logs "profiler_start/stop" lines to fd 2
        profiler.start()
    began = time.perf_counter()
    try:
        fn()
    finally:
        seconds = time.perf_counter() - began
        with _native_stderr_silenced():
            profiler.stop()
    events = [e for e in profiler.profiler.kineto_results.events() if e.name() == "[memory]"]
    current = peak = 0
    for event in sorted(events, key=lambda e: e.start_ns()):
        current += event.nbytes()  # negative for frees
        peak = max(peak, current)
    return peak / MIB, seconds


@contextlib.contextmanager
def _native_stderr_silenced() -> Iterator[None]:
    """Points file descriptor 2 at /dev/null, for C++ libraries that log around the profiler."""
    saved = os.dup(2)
    try:
        with open(os.devnull, "w") as null:
            os.dup2(null.fileno(), 2)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


def paired_ratio(samples: list[float], reference: list[float]) -> tuple[float, Optional[tuple[float, float]]]:
    """Ratio of two interleaved timings and its 95% interval, from repetitions paired by index.

    Each repetition i gives one ratio samples[i] / reference[i] (taken moments apart, so a burst
    of load from other processes hits both). The ratio is the geometric mean of those ratios and
    the interval is Student's t interval of the mean of their logarithms, mapped back by exp:
    log-ratios are symmetric where ratios are not (2x slower and 2x faster are +-log 2). None as
    the interval with fewer than two pairs.
    """
    pairs = min(len(samples), len(reference))
    logs = [math.log(s / r) for s, r in zip(samples[:pairs], reference[:pairs])]
    mean = sum(logs) / pairs
    if pairs < 2:
        return math.exp(mean), None
    from scipy.stats import t

    spread = math.sqrt(sum((x - mean) ** 2 for x in logs) / (pairs - 1))
    half_width = float(t.ppf(0.975, pairs - 1)) * spread / math.sqrt(pairs)
    return math.exp(mean), (math.exp(mean - half_width), math.exp(mean + half_width))
