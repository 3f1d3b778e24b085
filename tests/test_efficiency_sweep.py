"""The efficiency sweep as a resumable sweep, its limits at huge lengths, and its command's refusals."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import pytest

from bench_common import BenchError
from harness.cli import main
from harness.measure import efficiency_limits
from harness.measure.efficiency import run_efficiency
from harness.measure.efficiency_cases import Entry
from harness.measure.efficiency_limits import History, skip_reason
from harness.measure.efficiency_options import EfficiencyOptions, TimedMethod
from harness.measure.efficiency_store import row_key
from methods import register_attention
from methods.full import FullAttention

from conftest import default_sigint

ROOT = Path(__file__).resolve().parents[1]
TINY = {"num_heads": 2, "head_dim": 8, "min_reps": 2, "long_min_reps": 2, "max_reps": 2, "rep_budget_s": 0.0,
        "block_s": 0.0, "scopes": ["core"], "passes": ["forward"]}
TINY_SETS = [item for key, value in TINY.items() for item in ("--set", f"efficiency.{key}={json.dumps(value)}")]


def sweep(out, methods, seq_lens, **options):
    return json.loads(run_efficiency(methods, seq_lens, out, "cpu", [], {**TINY, **options}).read_text())


def keys(rows):
    return [row_key(r) for r in rows]


def one_line_error(capsys) -> str:
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1 and "Traceback" not in err
    return err


# --------------------------------------------------------------------------- resume


def test_a_rerun_keeps_finished_rows_and_adds_new_ones(tmp_path):
    first = sweep(tmp_path, ["linformer"], [16])
    second = sweep(tmp_path, ["linformer", "performer"], [16, 32])
    kept = {row_key(r): r for r in second["rows"]}
    for row in first["rows"]:  # the same measurement, not a new one of the same cell
        assert kept[row_key(row)]["time_ms"] == row["time_ms"] and kept[row_key(row)]["call"] == 0
    assert len(keys(second["rows"])) == len(set(keys(second["rows"]))) == 4 * 2  # sdpa, full, linformer, performer
    threads = second["rows"][0]["threads"]
    new = kept[("performer", "{}", None, 16, "core", "forward", threads)]
    assert new["call"] == 1 and new["status"] == "ok" and new["ratio_to_sdpa"] > 0
    assert set(new["paired"]) == {"sdpa", "full"}  # timed beside the references, not the kept linformer row
    longer = kept[("performer", "{}", None, 32, "core", "forward", threads)]
    assert set(longer["paired"]) == {"sdpa", "full", "linformer"}  # a new group pairs every method
    assert second["settings"]["seq_lens"] == [16, 32] and len(second["calls"]) == 2


def test_another_measurement_setting_is_refused_and_the_file_kept(tmp_path):
    sweep(tmp_path, ["linformer"], [16])
    before = (tmp_path / "efficiency.json").read_bytes()
    with pytest.raises(BenchError, match=r"other settings \(num_heads: 2 -> 4\)"):
        sweep(tmp_path, ["linformer"], [16], num_heads=4)
    assert (tmp_path / "efficiency.json").read_bytes() == before


def test_another_thread_count_is_another_row(tmp_path):
    sweep(tmp_path, ["linformer"], [16], num_threads=1)
    rows = sweep(tmp_path, ["linformer"], [16], num_threads=2)["rows"]
    assert sorted({r["threads"] for r in rows if r["method"] == "linformer"}) == [1, 2]


def test_error_rows_are_measured_again(tmp_path, restore_attention_registry):
    broken = {"now": True}

    @register_attention("test-flaky")
    class Flaky(FullAttention):
        def forward(self, q, k, v, key_padding_mask=None):
            if broken["now"]:
                raise ValueError("flaky")
            return super().forward(q, k, v, key_padding_mask)

    assert [r["status"] for r in sweep(tmp_path, ["test-flaky"], [16])["rows"] if r["method"] == "test-flaky"] == ["error"]
    broken["now"] = False
    rows = [r for r in sweep(tmp_path, ["test-flaky"], [16])["rows"] if r["method"] == "test-flaky"]
    assert [(r["status"], r["call"]) for r in rows] == [("ok", 1)]


def test_a_file_that_is_not_efficiency_results_is_refused_not_replaced(tmp_path):
    (tmp_path / "efficiency.json").write_text(json.dumps({"rows": [{"method": "full"}]}))
    with pytest.raises(BenchError, match="efficiency.json: expected efficiency results"):
        sweep(tmp_path, ["full"], [16])
    assert json.loads((tmp_path / "efficiency.json").read_text()) == {"rows": [{"method": "full"}]}


def test_sigint_keeps_the_finished_groups_and_the_same_command_resumes(tmp_path):
    out = tmp_path / "out"
    command = [sys.executable, "run_benchmark.py", "efficiency", "--methods", "linformer", "--device", "cpu",
               "--out", str(out), "--seq-lens", "16,32,64,128,256,512", *TINY_SETS,
               "--set", "efficiency.max_reps=200", "--set", "efficiency.min_reps=200",
               "--set", "efficiency.num_threads=1"]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    process = subprocess.Popen(command, cwd=ROOT, env=env, stderr=subprocess.PIPE, text=True,
                               preexec_fn=default_sigint)
    path = out / "efficiency.json"
    deadline = time.monotonic() + 300  # a hang guard, not a speed target
    while not path.exists() and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    process.send_signal(signal.SIGINT)
    _, err = process.communicate(timeout=120)
    assert process.returncode == 130, err
    assert "rerun the same command to resume" in err
    interrupted = json.loads(path.read_text())
    lengths = {r["seq_len"] for r in interrupted["rows"]}
    assert 16 in lengths and 512 not in lengths
    subprocess.run(command, cwd=ROOT, env=env, check=True, capture_output=True, timeout=600)
    resumed = {row_key(r): r for r in json.loads(path.read_text())["rows"]}
    for row in interrupted["rows"]:
        assert resumed[row_key(row)] == row
    assert {r["seq_len"] for r in resumed.values()} == {16, 32, 64, 128, 256, 512}


# --------------------------------------------------------------------------- limits at huge lengths


def test_a_huge_length_is_predicted_from_a_probe_near_it(monkeypatch):
    """A call costs 1 ms of overhead plus 1e-9 n^2 s: the overhead hides the growth at short lengths,
    so probes at 256 and 1024 alone predict ~0.2 s at n=100000 where a call takes 10 s."""
    probed = []

    def fake_build(entry, seq_len, *args):
        probed.append(seq_len)
        return SimpleNamespace(run=seq_len)

    monkeypatch.setattr(efficiency_limits, "build_case", fake_build)
    monkeypatch.setattr(efficiency_limits, "extra_memory_mb", lambda n, device: (1.0, 1e-3 + 1e-9 * n * n))
    opts = EfficiencyOptions(cell_budget_s=5.0)
    status, reason = skip_reason(Entry(TimedMethod.of("sdpa")), History(), 100_000, "core", "forward", opts,
                                 "cpu", None)
    assert status == "timeout" and "extrapolated" in reason
    assert probed == [256, 1024, 4096, 16384]  # the last within 8x of the target
    seconds = float(reason.split("extrapolated ")[1].split(" s")[0])
    assert 8 < seconds < 12  # true cost 10 s


def test_probes_stop_at_the_first_one_predicted_over_the_budget(monkeypatch):
    probed = []
    monkeypatch.setattr(efficiency_limits, "build_case", lambda e, n, *a: probed.append(n) or SimpleNamespace(run=n))
    monkeypatch.setattr(efficiency_limits, "extra_memory_mb", lambda n, device: (1.0, 1e-6 * n * n))
    status, _ = skip_reason(Entry(TimedMethod.of("sdpa")), History(), 10**7, "core", "forward",
                            EfficiencyOptions(cell_budget_s=5.0), "cpu", None)
    assert status == "timeout" and probed == [256, 1024]  # 4096 would take ~17 s


def test_length_one_is_unsupported_for_tree_methods_not_an_error(tmp_path):
    rows = sweep(tmp_path, ["treeformer-tf"], [1])["rows"]
    tree_rows = [r for r in rows if r["method"] == "treeformer-tf"]
    assert len(tree_rows) == 2
    for row in tree_rows:
        assert row["status"] == "unsupported", row
        assert "length 1" in row["reason"] and "choose height" not in row["reason"]
    assert {r["status"] for r in rows if r["method"] in ("sdpa", "full")} == {"ok"}


# --------------------------------------------------------------------------- the command


def test_suite_variants_are_timed_with_their_own_options(tmp_path):
    assert main(["efficiency", "--suite", "treeformer-ablation", "--methods", "tc-h2,tf-h3", "--seq-lens", "64",
                 "--device", "cpu", "--out", str(tmp_path), *TINY_SETS]) == 0
    rows = json.loads((tmp_path / "efficiency.json").read_text())["rows"]
    options = {(r["method"], r["tree"]): (r["attention"], r["options"]) for r in rows}
    assert options[("tc-h2", "balanced")] == ("treeformer-tc", {"height": 2})
    assert options[("tf-h3", "random")] == ("treeformer-tf", {"height": 3})


def test_set_attention_options_means_what_it_means_for_run(tmp_path):
    assert main(["efficiency", "--methods", "treeformer-tf", "--seq-lens", "64", "--device", "cpu",
                 "--out", str(tmp_path), *TINY_SETS, "--set", "model.attention_options.height=2"]) == 0
    rows = json.loads((tmp_path / "efficiency.json").read_text())["rows"]
    assert {json.dumps(r["options"]) for r in rows if r["method"] == "treeformer-tf"} == {'{"height": 2}'}


@pytest.mark.parametrize("flags, named", [
    (["--set", "train.steps=5"], "--set train.steps: does not apply to efficiency"),
    (["--set", "min_reps=5"], "unknown key 'min_reps'"),
    (["--set", "efficiency.min_rep=5"], "--set efficiency: unknown key 'min_rep' (did you mean 'min_reps'?)"),
    (["--config", "/nonexistent.yaml"], "--config does not apply"),
    (["--tasks", "bogus"], "--tasks does not apply"),
    (["--executor", "ray", "--force"], "--executor does not apply to efficiency (its flags: --plugin"),
    (["--out", "/proc/efficiency-out"], "--out /proc/efficiency-out: not writable"),
])
def test_flags_that_do_not_apply_or_cannot_work_are_one_line_exit_2(tmp_path, capsys, flags, named):
    argv = ["efficiency", "--methods", "linformer", "--seq-lens", "16", "--device", "cpu", "--out", str(tmp_path),
            *TINY_SETS, *flags]
    assert main(argv) == 2
    assert named in one_line_error(capsys)
    assert not (tmp_path / "efficiency.json").exists()
