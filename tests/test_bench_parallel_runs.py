"""scripts/bench_parallel_runs.py: both arms run the step and the ratio is throughput over all processes
(no timing is asserted here)."""

import re
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "bench_parallel_runs.py"


@pytest.mark.slow
def test_one_repetition_prints_both_arms_and_their_throughput_ratio():
    done = subprocess.run([sys.executable, str(SCRIPT), "--methods", "sdpa", "--steps", "1", "--repeats", "1"],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    line = re.search(r"one process, 2 threads (\d+) ms/step; two processes, 1 thread each (\d+), (\d+) ms/step; "
                     r"throughput ratio ([\d.]+)", done.stdout)
    assert line, done.stdout
    one, first, second, ratio = (float(value) for value in line.groups())
    assert ratio == pytest.approx((1 / first + 1 / second) / (1 / one), rel=0.05)  # printed ms are rounded
    assert "sdpa: median throughput" in done.stdout
