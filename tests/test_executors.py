"""Executors: option checking, failure rows, the subprocess executor's limits, the Ray executor.

Ray tests share one local cluster for the session (starting one takes ~7 s). Runs use the stand-in
run functions of tests/executor_probes.py; the smoke suite's real runs through `ray` vs `local` are
compared in test_ray_smoke_suite_matches_local.
"""

import os
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

import executor_probes as probes
from bench_common import BenchError
from harness.sweep.executors import executor_from_flags, get_executor
from harness.sweep.records import RECORD_KEYS, RunSpec, failure_record
from harness.training.failures import classify_exception

ROOT = Path(__file__).resolve().parents[1]
PLUGIN_SOURCE = textwrap.dedent(
    '''
    from methods import AttentionMethod, register_attention

    @register_attention("probe-plugin")
    class ProbePlugin(AttentionMethod):
        """Registered only where the plugin is loaded."""

        def forward(self, q, k, v, key_padding_mask=None):
            return v

        def macs(self, seq_len):
            return 0
    '''
)


def specs(seeds, **config):
    return [RunSpec(method="full", task="probe", seed=s, config=dict(config), config_hash="h") for s in seeds]


def collect(executor, run_fn, spec_list):
    rows = []
    executor.map(run_fn, spec_list, lambda spec, record: rows.append((spec, record)))
    return rows


# --- choosing an executor -------------------------------------------------------------------


def test_unknown_executor_and_option_are_one_line_errors():
    with pytest.raises(BenchError, match="unknown executor 'slurm'; available: local, ray, subprocess"):
        get_executor("slurm")
    with pytest.raises(BenchError, match="--executor subprocess: unknown option 'timeout' \\(did you mean 'timeout_s'\\?\\)"):
        get_executor("subprocess", timeout=3)
    with pytest.raises(BenchError, match="timeout_s must be a positive number"):
        get_executor("subprocess", timeout_s=0)


def test_flags_for_another_executor_are_refused():
    with pytest.raises(BenchError, match="--ray-address applies to --executor ray only"):
        executor_from_flags("local", ray_address="auto")
    with pytest.raises(BenchError, match="--run-timeout applies to --executor subprocess only"):
        executor_from_flags("ray", timeout_s=5)
    executor = executor_from_flags("subprocess", timeout_s=5, memory_gb=1)
    assert (executor.name, executor.timeout_s, executor.memory_gb) == ("subprocess", 5, 1)
    assert executor_from_flags("ray", ray_address="auto").address == "auto"


def test_listing_methods_does_not_import_ray():
    code = "import sys; from harness.cli import main; main(['list']); assert 'ray' not in sys.modules, 'ray imported'"
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "sdpa" in done.stdout


def test_ray_missing_says_how_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)  # makes `import ray` raise ImportError
    executor = get_executor("ray")
    with pytest.raises(BenchError, match=r"pip install 'treeformer-bench\[scale\]'"):
        executor.map(probes.report_pid, specs([0]), lambda spec, record: None)


# --- failure rows -----------------------------------------------------------------------------


def test_failure_record_has_the_record_schema():
    config = {"attention": "treeformer-tc", "task_version": "2", "runtime": {"suite": "quick"}}
    record = failure_record(RunSpec("treeformer-tc-h4", "listops", 3, config, "abc"), "timeout", "too slow")
    assert tuple(record) == RECORD_KEYS
    assert (record["method"], record["attention"], record["task"], record["task_version"], record["seed"]) == (
        "treeformer-tc-h4", "treeformer-tc", "listops", "2", 3)
    assert (record["status"], record["reason"], record["suite"], record["config_hash"]) == ("timeout", "too slow", "quick", "abc")
    assert record["metrics"]["test_accuracy"] is None and record["metrics"]["history"] == []
    assert record["env"]["versions"]["torch"]


def test_exceptions_are_classified_as_oom_or_error():
    assert classify_exception(MemoryError())[0] == "oom"
    torch_oom = RuntimeError("[enforce fail] DefaultCPUAllocator: can't allocate memory: you tried 9 GB")
    assert classify_exception(torch_oom)[0] == "oom"
    try:
        raise ValueError("bad\nvalue")
    except ValueError as err:
        status, reason = classify_exception(err)
    assert status == "error"
    assert reason.startswith("ValueError: bad value (at ") and "test_executors.py" in reason
    assert classify_exception(BenchError("model.x: expected int")) == ("error", "model.x: expected int")


# --- subprocess -------------------------------------------------------------------------------


@pytest.mark.slow
def test_subprocess_failures_become_rows_and_the_sweep_goes_on():
    """Seeds: 1 hangs past the limit, 2 is SIGKILLed, 3 raises, 4 exceeds the memory cap; 0 and 5 are fine."""
    executor = get_executor("subprocess", timeout_s=8, memory_gb=1)
    rows = collect(executor, probes.by_seed, specs([0, 1, 2, 3, 4, 5]))
    statuses = {spec.seed: record["status"] for spec, record in rows}
    assert [spec.seed for spec, _ in rows] == [0, 1, 2, 3, 4, 5]
    assert statuses == {0: "ok", 1: "timeout", 2: "error", 3: "error", 4: "oom", 5: "ok"}
    reasons = {spec.seed: record["reason"] for spec, record in rows}
    assert "wall-clock limit of 8 s" in reasons[1]
    assert "killed by SIGKILL" in reasons[2]
    assert reasons[3].startswith("ValueError: broken run")
    assert reasons[4].startswith("MemoryError")
    pids = {rows[0][1]["diagnostics"]["pid"], rows[5][1]["diagnostics"]["pid"], os.getpid()}
    assert len(pids) == 3  # each run had a process of its own
    assert all(tuple(record) == RECORD_KEYS for spec, record in rows if spec.seed in (1, 2, 3, 4))


@pytest.mark.slow
def test_subprocess_limit_defaults_to_the_runs_time_limit_plus_grace():
    executor = get_executor("subprocess", grace_s=1.5)
    assert executor.limit_for(specs([0], train={"time_limit_s": 2})[0]) == 3.5
    assert executor.limit_for(specs([0], train={"time_limit_s": None})[0]) is None
    start = time.monotonic()
    [(_, record)] = collect(executor, probes.by_seed, specs([1], train={"time_limit_s": 2}))
    assert record["status"] == "timeout" and "limit of 3.5 s" in record["reason"]
    assert time.monotonic() - start < 60  # the hang (an hour) was cut short


@pytest.mark.slow
def test_subprocess_workers_run_side_by_side_and_failures_stay_rows():
    """Two workers: seed 1 hangs until its limit while the others pass it; every run is one row."""
    executor = get_executor("subprocess", timeout_s=15, workers=2)  # room for three spawns on a loaded machine
    rows = collect(executor, probes.by_seed, specs([0, 1, 3, 5]))
    assert {spec.seed: record["status"] for spec, record in rows} == {0: "ok", 1: "timeout", 3: "error", 5: "ok"}
    assert [spec.seed for spec, _ in rows][-1] == 1  # the others finished while it hung
    sleepers = collect(get_executor("subprocess", workers=2), probes.sleep_and_time, specs([0, 1], sleep_s=4))
    (first, second) = sorted((record["diagnostics"]["start"], record["diagnostics"]["end"]) for _, record in sleepers)
    assert second[0] < first[1]  # the second run started before the first ended


def test_workers_must_be_a_positive_integer():
    with pytest.raises(BenchError, match="workers must be a positive integer, got 0"):
        get_executor("subprocess", workers=0)
    assert executor_from_flags("subprocess", workers=3).workers == 3
    assert executor_from_flags("subprocess").workers == 1


# --- ray --------------------------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_unreachable_ray_address_fails_fast_before_any_run(tmp_path):
    marker = tmp_path / "started"
    executor = get_executor("ray", ray_address=f"127.0.0.1:{_free_port()}")
    start = time.monotonic()
    with pytest.raises(BenchError, match=r"--ray-address 127.0.0.1:\d+: no Ray cluster reachable there"):
        executor.map(probes.touch_marker, specs([0], marker=str(marker)), lambda spec, record: None)
    assert time.monotonic() - start < 30
    assert not marker.exists()
    with pytest.raises(BenchError, match="expected auto, HOST:PORT"):
        get_executor("ray", ray_address="nowhere").map(probes.report_pid, specs([0]), lambda s, r: None)


@pytest.fixture(scope="session")
def ray_cluster(tmp_path_factory):
    """One local Ray cluster for the test session; workers can import the test probes."""
    ray = pytest.importorskip("ray")
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    path = os.pathsep.join([str(ROOT), str(ROOT / "tests")])
    ray.init(num_cpus=2, include_dashboard=False, _temp_dir=str(tmp_path_factory.mktemp("ray")),
             runtime_env={"env_vars": {"PYTHONPATH": path, "OMP_NUM_THREADS": "1"}}, log_to_driver=False)
    yield ray
    ray.shutdown()


@pytest.mark.slow
def test_ray_records_return_to_the_driver_and_failures_are_rows(ray_cluster):
    rows = collect(get_executor("ray"), probes.exit_abruptly, specs([0, 1, 2]))
    statuses = {spec.seed: record["status"] for spec, record in rows}
    assert statuses == {0: "ok", 1: "ok", 2: "error"}
    assert "Ray task failed" in dict((s.seed, r) for s, r in rows)[2]["reason"]
    assert os.getpid() not in {record["diagnostics"]["pid"] for _, record in rows if record["status"] == "ok"}
    [(_, raised)] = collect(get_executor("ray"), probes.by_seed, specs([3]))
    assert raised["status"] == "error" and raised["reason"].startswith("ValueError: broken run")


@pytest.mark.slow
def test_ray_ships_plugin_files_to_workers(ray_cluster, tmp_path):
    plugin = tmp_path / "probe_plugin.py"
    plugin.write_text(PLUGIN_SOURCE)
    runtime = {"plugins": [str(plugin)]}
    [(_, record)] = collect(get_executor("ray"), probes.list_methods, specs([0], runtime=runtime))
    assert record["status"] == "ok", record["reason"]
    assert "probe-plugin" in record["diagnostics"]["methods"]
    loaded_from = Path(record["diagnostics"]["plugin_files"]["probe-plugin"])
    assert loaded_from != plugin and "treeformer-bench-plugins" in loaded_from.parts  # a shipped copy
    assert loaded_from.read_text() == PLUGIN_SOURCE
    assert record["config"]["runtime"] == runtime  # the record keeps the driver's config


@pytest.mark.slow
def test_ray_gpu_request_without_gpus_fails_before_any_run(ray_cluster, tmp_path):
    marker = tmp_path / "started"
    batch = specs([0], marker=str(marker)) + specs([1], marker=str(marker), device="cuda")
    with pytest.raises(BenchError, match="--device cuda needs 1 GPU per run, but the Ray cluster has 0"):
        get_executor("ray").map(probes.touch_marker, batch, lambda spec, record: None)
    assert not marker.exists()


# --- real runs: the same records through ray as through local ---------------------------------

TINY_PLUGIN = str(Path(__file__).with_name("scaleout_tiny_plugin.py"))
# Measured, not computed: these differ between any two runs of the same config.
VOLATILE_METRICS = {"train_seconds", "steps_per_second", "tokens_per_second", "peak_memory_mb"}


def sweep_records(executor, out: Path, suite: str, sets: list, plugins: list, seeds=(0,)) -> dict:
    from harness.sweep.driver import SweepRequest, resolve_specs, run_sweep

    request = SweepRequest(suite=suite, seeds=list(seeds), sets=sets, out=out, data_dir=out.parent / "data",
                           plugins=plugins)
    specs = resolve_specs(request)
    return {record["task"] + "/" + record["method"] + f"/{record['seed']}": record
            for record in run_sweep(specs, out, executor)}


def assert_same_records(local: dict, remote: dict) -> None:
    """Same runs, statuses, configs, accuracies and FLOPs; losses within 1e-5 relative (both sides
    run with one torch thread, so they should match exactly; the margin covers BLAS dispatch)."""
    assert sorted(local) == sorted(remote)
    for key, mine in local.items():
        theirs = remote[key]
        assert (theirs["status"], theirs["reason"]) == (mine["status"], mine["reason"]), key
        assert theirs["config_hash"] == mine["config_hash"], key
        assert theirs["flops"] == mine["flops"], key
        assert theirs["bootstrap"] == mine["bootstrap"], key
        for metric, value in mine["metrics"].items():
            if metric == "history":
                assert [h["step"] for h in theirs["metrics"]["history"]] == [h["step"] for h in value], key
                for a, b in zip(theirs["metrics"]["history"], value):
                    assert a["val_accuracy"] == b["val_accuracy"], key
                    assert a["train_loss"] == pytest.approx(b["train_loss"], rel=1e-5), key
            elif metric not in VOLATILE_METRICS:
                assert theirs["metrics"][metric] == value, f"{key}: {metric}"


@pytest.fixture
def one_torch_thread():
    """Ray workers run with OMP_NUM_THREADS=1: the local side must sum in the same order."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.mark.slow
def test_ray_smoke_suite_matches_local(ray_cluster, tmp_path, one_torch_thread):
    """The smoke suite as CI knows it, seed 0, through both executors."""
    from harness.sweep.executors import LocalExecutor

    local = sweep_records(LocalExecutor(), tmp_path / "local", "smoke", [], [])
    remote = sweep_records(get_executor("ray"), tmp_path / "ray", "smoke", [], [])
    assert len(local) >= 4 and "ok" in {r["status"] for r in local.values()}
    assert_same_records(local, remote)


def run_cli(tmp_path: Path, out: str, *flags: str) -> dict:
    """`run_benchmark.py run` on the tiny suite in a fresh process; returns its records by key."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), str(ROOT / "tests")]), "OMP_NUM_THREADS": "1"}
    args = ["run", "--plugin", TINY_PLUGIN, "--suite", "scaleout-tiny", "--seeds", "0", "--device", "cpu",
            "--data-dir", str(tmp_path / "data"), "--out", str(tmp_path / out),
            "--set", "train.steps=12", "--set", "train.eval_every=6", *flags]
    done = subprocess.run([sys.executable, str(ROOT / "run_benchmark.py"), *args], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    paths = sorted((tmp_path / out / "records").rglob("seed*.json"))
    import json

    return {"/".join(p.parts[-3:]): json.loads(p.read_text()) for p in paths}


@pytest.mark.slow
def test_cli_subprocess_executor_gives_the_same_records_as_local(tmp_path):
    local = run_cli(tmp_path, "local", "--methods", "full")
    isolated = run_cli(tmp_path, "subprocess", "--methods", "full", "--executor", "subprocess",
                       "--run-timeout", "120", "--run-memory-gb", "8")
    assert len(local) == 1 and {r["status"] for r in local.values()} == {"ok"}
    assert_same_records(local, isolated)


@pytest.mark.slow
def test_real_run_over_the_memory_cap_is_an_oom_row(tmp_path):
    """A real run whose batch needs ~2 GiB at a 1.5 GiB cap: an `oom` row, and the driver lives on."""
    from harness.sweep.driver import SweepRequest, resolve_specs, run_sweep
    from methods import load_plugin

    load_plugin(TINY_PLUGIN)
    sets = ["train.steps=2", "train.batch_size=4096", "model.mlp_dim=8192", "data.num_examples=8192"]
    request = SweepRequest(suite="scaleout-tiny", methods=["full"], seeds=[0], sets=sets, out=tmp_path / "out",
                           data_dir=tmp_path / "data", plugins=[TINY_PLUGIN])
    [record] = run_sweep(resolve_specs(request), request.out, get_executor("subprocess", memory_gb=1.5))
    assert "can't allocate memory" in record["reason"]
    assert record["status"] == "oom"
