"""Fixtures and plugin sources shared by the tests/test_reliability_*.py files."""

import textwrap
from pathlib import Path

import pytest
import torch


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
