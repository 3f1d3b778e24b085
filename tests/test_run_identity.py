"""A run's identity: the torch thread count is in its config (and hash), and every executor's
record names the user's command, not a worker's."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

from harness.config import layered as cfg
from harness.sweep.driver import SweepRequest, resolve_specs

ROOT = Path(__file__).resolve().parents[1]


def specs(tmp_path, *sets):
    return resolve_specs(SweepRequest(suite="smoke", methods=["sdpa"], tasks=["mqar"], out=tmp_path,
                                      data_dir=tmp_path, sets=list(sets)))


def test_threads_resolve_into_the_config_and_change_the_hash(tmp_path):
    import torch

    (planned,) = specs(tmp_path)
    assert planned.config["threads"] == torch.get_num_threads()
    (one,) = specs(tmp_path, "threads=1")
    (three,) = specs(tmp_path, "threads=3")
    assert (one.config["threads"], three.config["threads"]) == (1, 3)
    assert one.config_hash != three.config_hash
    assert cfg.config_hash({**one.config, "threads": 3}) == three.config_hash


def test_a_bad_thread_count_is_one_line(tmp_path):
    from bench_common import BenchError

    with pytest.raises(BenchError, match="threads must be >= 1"):
        specs(tmp_path, "threads=0")


@pytest.mark.slow
def test_subprocess_workers_record_the_users_command_and_run_with_the_planned_threads(tmp_path):
    command = [sys.executable, str(ROOT / "run_benchmark.py"), "run", "--suite", "smoke", "--methods", "sdpa",
               "--tasks", "mqar", "--out", str(tmp_path / "out"), "--data-dir", str(tmp_path / "data"),
               "--executor", "subprocess", "--set", "threads=1", "--set", "train.steps=2", "--set",
               "train.eval_every=1"]
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    (path,) = (tmp_path / "out" / "records").rglob("seed0.json")
    record = json.loads(path.read_text())
    assert record["env"]["command"].startswith("run_benchmark.py run --suite smoke")
    assert "--executor subprocess" in record["env"]["command"]
    assert record["env"]["device"].endswith("1 threads)")
    assert record["config"]["threads"] == 1
