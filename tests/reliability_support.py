"""Fixtures, plugin sources and sweep processes shared by the tests/test_reliability_*.py files."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Callable, Iterator, TypeVar

import pytest
import torch

ROOT = Path(__file__).resolve().parent.parent
DRIVER = ROOT / "tests" / "reliability_driver.py"
T = TypeVar("T")


@pytest.fixture
def one_thread():
    """One torch thread while a test trains: on the shared two-core test machine two threads spin
    against each other and tiny models train many times slower."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def write_plugin(directory: Path, name: str, source: str) -> Path:
    """A plugin file `<directory>/<name>.py` holding `source` (dedented)."""
    path = Path(directory) / f"{name}.py"
    path.write_text(textwrap.dedent(source))
    return path


def sweep_command(out: Path, data: Path, *flags: str) -> list[str]:
    """The driver's sweep of suite 'reliability' on the CPU into `out`, plus `flags`."""
    return [sys.executable, str(DRIVER), "run", "--suite", "reliability", "--out", str(out), "--data-dir", str(data),
            "--device", "cpu", *flags]


def driver_environment() -> dict[str, str]:
    """One thread per process: the shared test machine has two cores, and oversubscribed torch
    threads make a 100-step run take a minute instead of seconds."""
    return {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}


def run_driver(cmd: list[str], timeout_s: float) -> subprocess.CompletedProcess:
    """`cmd` run to its end from the repository root, its output captured as text."""
    return subprocess.run(cmd, cwd=ROOT, env=driver_environment(), capture_output=True, text=True, timeout=timeout_s)


@contextmanager
def driver_process(cmd: list[str], logs: Path) -> Iterator[subprocess.Popen]:
    """`cmd` started from the repository root, its output in `logs`/stdout and stderr; killed and
    reaped when the block ends, however it ends, so no test leaves a sweep running."""
    with open(logs / "stdout", "w") as stdout, open(logs / "stderr", "w") as stderr:
        proc = subprocess.Popen(cmd, cwd=ROOT, env=driver_environment(), stdout=stdout, stderr=stderr)
    try:
        yield proc
    finally:
        if proc.poll() is None:
            proc.kill()  # this test's own sweep process
        proc.wait(timeout=60)


def wait_for(proc: subprocess.Popen, found: Callable[[], T], what: str, limit_s: float) -> T:
    """Polls `found()` until it returns something true, and returns that; fails the test if `proc`
    ends first (then nothing is left to interrupt) or `limit_s` passes."""
    deadline = time.monotonic() + limit_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"the sweep ended (status {proc.returncode}) before {what}")
        result = found()
        if result:
            return result
        time.sleep(0.01)
    pytest.fail(f"no {what} within {limit_s} s")


def checkpoints(out: Path) -> list[Path]:
    """The checkpoints of the runs in training under sweep folder `out`."""
    return sorted((out / "checkpoints").glob("*/*/seed*.pt"))


# Full-attention cores that misbehave after five training forwards, one registered name per fault:
# faulty-nan (NaN output), faulty-memory (MemoryError, a CPU allocation failure), faulty-cuda-oom
# (torch.cuda.OutOfMemoryError, raisable on CPU too), faulty-cpu-alloc (torch's CPU allocator
# failing: a RuntimeError) and faulty-slow (every training step sleeps).
FAULTY_PLUGIN = '''
import time

import torch
from methods import register_attention
from methods.full import FullAttention

AFTER = 5


class Faulty(FullAttention):
    """Full attention that fails on purpose after some training steps (reliability tests)."""

    fault = ""

    def __init__(self, num_heads=0, head_dim=0, max_seq_len=0):
        super().__init__()
        self.calls = 0

    def forward(self, q, k, v, key_padding_mask=None):
        out = super().forward(q, k, v, key_padding_mask)
        if not self.training:
            return out
        self.calls += 1
        if self.fault == "slow":
            time.sleep(0.05)
        if self.calls <= AFTER:
            return out
        if self.fault == "nan":
            return out * float("nan")
        if self.fault == "memory":
            raise MemoryError("cannot allocate 12 GiB")
        if self.fault == "cuda-oom":
            raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        if self.fault == "cpu-alloc":  # what torch's CPU allocator raises
            raise RuntimeError("DefaultCPUAllocator: can't allocate memory: you tried to allocate 123 bytes")
        return out


for fault in ("nan", "memory", "cuda-oom", "cpu-alloc", "slow"):
    register_attention(f"faulty-{fault}")(type(f"Faulty_{fault}", (Faulty,), {"fault": fault}))
'''
