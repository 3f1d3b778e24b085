"""Reruns: failed runs are retried with their history kept, diverged/unsupported stay done unless
--retry-failed, and a finished record of another config is refused unless --force."""

import json

import pytest

from bench_common import BenchError
from harness.cli import main
from harness.sweep import records, runner
from harness.sweep.driver import config_changes
from test_sweep_records import NAN_PLUGIN, sweep


@pytest.fixture
def counted(monkeypatch):
    """Counts the runs actually executed (keys, in order)."""
    calls = []
    real = runner.execute_run
    monkeypatch.setattr(runner, "execute_run", lambda spec: calls.append(spec.key) or real(spec))
    return calls


def failing_sweep(tmp_path, monkeypatch, status, **kwargs):
    """A sweep whose runs end as `status` records (as a timed-out or crashed worker's)."""
    with monkeypatch.context() as patch:
        patch.setattr(runner, "execute_run", lambda spec: records.failure_record(spec, status, f"{status} here"))
        return sweep(tmp_path, **kwargs)


def record_of(tmp_path, method="full"):
    return json.loads((tmp_path / f"out/records/tiny-majority/{method}/seed0.json").read_text())


@pytest.mark.parametrize("status", ["timeout", "oom", "error"])
def test_a_rerun_retries_failed_runs_and_keeps_their_history(tmp_path, tiny_suite, monkeypatch, status):
    _, done = failing_sweep(tmp_path, monkeypatch, status, methods=("full",))
    assert done[0]["status"] == status
    _, done = sweep(tmp_path, methods=("full",))
    assert done[0]["status"] == "ok"
    [attempt] = record_of(tmp_path)["previous_attempts"]
    assert attempt["status"] == status and attempt["reason"] == f"{status} here"
    assert attempt["config_hash"] == done[0]["config_hash"] and attempt["finished_at"] and attempt["env"]


def test_history_grows_across_retries(tmp_path, tiny_suite, monkeypatch):
    failing_sweep(tmp_path, monkeypatch, "timeout", methods=("full",))
    failing_sweep(tmp_path, monkeypatch, "error", methods=("full",))
    sweep(tmp_path, methods=("full",))
    assert [a["status"] for a in record_of(tmp_path)["previous_attempts"]] == ["timeout", "error"]


def test_a_failed_run_of_another_config_is_replaced(tmp_path, tiny_suite, monkeypatch):
    # Fixing a failure often means changing the config (a longer train.time_limit_s): no --force needed.
    failing_sweep(tmp_path, monkeypatch, "timeout", methods=("full",))
    _, done = sweep(tmp_path, methods=("full",), sets=["train.lr=0.002"])
    record = record_of(tmp_path)
    assert done[0]["status"] == "ok" and record["config"]["train"]["lr"] == 0.002
    assert record["previous_attempts"][0]["config_hash"] != record["config_hash"]


def test_diverged_stays_done_unless_retry_failed(tmp_path, tiny_suite, restore_attention_registry, counted, capsys):
    plugin = tmp_path / "nan_plugin.py"
    plugin.write_text(NAN_PLUGIN)
    from methods import load_plugin

    load_plugin(str(plugin))
    args = dict(methods=("nan-after-5",), plugins=[str(plugin)])
    sweep(tmp_path, **args)
    assert counted == ["tiny-majority/nan-after-5/seed0"]
    capsys.readouterr()
    _, done = sweep(tmp_path, **args)
    assert len(counted) == 1 and done[0]["status"] == "diverged"
    assert "diverged runs are kept (--retry-failed reruns them)" in capsys.readouterr().err
    sweep(tmp_path, retry_failed=True, **args)
    assert len(counted) == 2
    assert [a["status"] for a in record_of(tmp_path, "nan-after-5")["previous_attempts"]] == ["diverged"]


def test_ok_record_of_another_config_is_refused_and_untouched(tmp_path, tiny_suite, counted):
    sweep(tmp_path, methods=("full",))
    before = {p: p.read_bytes() for p in (tmp_path / "out").rglob("*") if p.is_file()}
    with pytest.raises(BenchError) as err:
        sweep(tmp_path, methods=("full",), sets=["train.steps=5"])
    message = str(err.value)
    assert "train.steps: 10 -> 5" in message and "--force" in message and "seed0.json" in message
    assert len(counted) == 1
    assert before == {p: p.read_bytes() for p in (tmp_path / "out").rglob("*") if p.is_file()}
    _, done = sweep(tmp_path, methods=("full",), sets=["train.steps=5"], force=True)
    record = record_of(tmp_path)
    assert done[0]["metrics"]["steps"] == 5 and record["previous_attempts"][0]["steps"] == 10


def test_retry_failed_does_not_replace_a_record_of_another_config(tmp_path, tiny_suite):
    sweep(tmp_path, methods=("full",))
    with pytest.raises(BenchError, match="train.lr: 0.003 -> 0.002"):
        sweep(tmp_path, methods=("full",), sets=["train.lr=0.002"], retry_failed=True)


def test_config_changes_names_dotted_keys_and_counts_the_rest():
    old = {"train": {"steps": 20, "lr": 0.1, "a": 1, "b": 2}, "model": {"x": "y"}, "runtime": {"d": 1}}
    new = {"train": {"steps": 5, "lr": 0.2, "a": 3, "b": 4}, "model": {"z": 1}, "runtime": {"d": 2}}
    assert config_changes(old, new) == 'model.x: "y" -> (absent), model.z: (absent) -> 1, train.a: 1 -> 3, 3 more key(s)'
    assert config_changes({"train": {"steps": 20}}, {"train": {"steps": 5}}) == "train.steps: 20 -> 5"


def test_cli_refusal_of_another_config_exits_2_before_training(tmp_path, tiny_suite, capsys):
    base = ["run", "--suite", "tiny", "--methods", "full", "--out", str(tmp_path / "out"), "--data-dir",
            str(tmp_path / "data"), "--device", "cpu", "--set", "train.eval_every=5"]
    assert main([*base, "--set", "train.steps=10"]) == 0
    capsys.readouterr()
    assert main([*base, "--set", "train.steps=5"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1 and "train.steps: 10 -> 5" in err
    assert main([*base, "--set", "train.steps=5", "--force"]) == 0
