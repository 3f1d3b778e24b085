"""run_benchmark.py: exit statuses, one-line errors, plugins listed and trained, output files."""

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from harness.cli import main
from methods import register_attention
from methods.full import FullAttention
from test_sweep_records import NAN_PLUGIN

GOOD_PLUGIN = '''
from methods import register_attention
from methods.full import FullAttention


@register_attention("halved-full")
class HalvedFull(FullAttention):
    """Full attention with its output halved (a plugin loaded from a file by a test)."""

    def forward(self, q, k, v, key_padding_mask=None):
        return 0.5 * super().forward(q, k, v, key_padding_mask)
'''


def cli(tmp_path, *args):
    return main(["run", "--suite", "tiny", "--out", str(tmp_path / "out"), "--data-dir", str(tmp_path / "data"),
                 "--device", "cpu", "--set", "train.steps=10", "--set", "train.eval_every=5", *args])


def one_line_error(capsys):
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1 and "Traceback" not in err
    return err


def test_list_shows_methods_and_suites(capsys):
    assert main(["list"]) == 0
    out = capsys.readouterr().out
    assert "quick" in out and "smoke" in out and "treeformer-ablation" in out
    for name in ("full", "sdpa", "linformer", "performer", "xformers", "treeformer-tc", "treeformer-tf"):
        assert f"  {name} " in out


def test_the_script_exits_2_with_one_line_and_no_traceback():
    """The entry point itself, in its own process: what a user's shell sees."""
    result = subprocess.run([sys.executable, "run_benchmark.py", "frobnicate"], capture_output=True, text=True,
                            cwd=Path(__file__).resolve().parents[1])
    assert result.returncode == 2
    assert result.stderr.startswith("error: ") and result.stderr.count("\n") == 1, result.stderr
    assert "invalid choice: 'frobnicate'" in result.stderr


@pytest.mark.parametrize("argv, message", [
    (["run", "--bogus"], "run: unknown flag --bogus; its flags: --plugin"),
    (["list", "--bogus"], "list: unknown flag --bogus; its flags: --plugin, --debug"),
    (["run", "--suite", "quik"], "unknown suite 'quik'; did you mean 'quick'"),
    (["run", "--suite", "smoke", "--methods", "fulll"], "unknown attention method 'fulll'"),
    (["run", "--suite", "smoke", "--device", "tpu"], "--device: expected cpu, cuda or auto"),
    (["run", "--seeds", "one"], "expected comma-separated integers"),
    (["run", "--config", "missing.json"], "--config missing.json: cannot read it"),
    (["run", "--executor", "cloud"], "unknown executor 'cloud'"),
    (["list", "--plugin", "no_such_module_xyz"], "--plugin no_such_module_xyz: cannot import it"),
])
def test_usage_errors_exit_2_with_one_line(capsys, argv, message):
    assert main(argv) == 2
    assert message in one_line_error(capsys)


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the refusal on a machine without a GPU")
def test_cuda_without_gpu_exits_2_before_any_run(tmp_path, capsys):
    assert main(["run", "--suite", "smoke", "--device", "cuda", "--out", str(tmp_path / "out")]) == 2
    assert "no CUDA device" in one_line_error(capsys)
    assert not (tmp_path / "out").exists()


def test_plugin_file_is_listed_and_trained(tmp_path, tiny_suite, restore_attention_registry, capsys):
    plugin = tmp_path / "halved.py"
    plugin.write_text(GOOD_PLUGIN)
    assert main(["list", "--plugin", str(plugin)]) == 0
    assert "halved-full" in capsys.readouterr().out
    assert cli(tmp_path, "--plugin", str(plugin), "--methods", "halved-full,full") == 0
    record = json.loads((tmp_path / "out/records/tiny-majority/halved-full/seed0.json").read_text())
    assert record["status"] == "ok" and record["attention"] == "halved-full" and record["metrics"]["steps"] == 10
    assert record["config"]["runtime"]["plugins"] == [str(plugin)]


def test_failed_runs_exit_1_and_are_rows(tmp_path, tiny_suite, restore_attention_registry, capsys):
    plugin = tmp_path / "nan.py"
    plugin.write_text(NAN_PLUGIN)
    assert cli(tmp_path, "--plugin", str(plugin), "--methods", "nan-after-5,sdpa", "--seeds", "0,1") == 1
    out = capsys.readouterr().out
    assert out.count(": diverged") == 2 and out.count(": ok") == 2
    statuses = {p.parent.name + "/" + p.name: json.loads(p.read_text())["status"]
                for p in (tmp_path / "out/records").rglob("seed*.json")}
    assert statuses == {"nan-after-5/seed0.json": "diverged", "nan-after-5/seed1.json": "diverged",
                        "sdpa/seed0.json": "ok", "sdpa/seed1.json": "ok"}


def test_rerun_skips_done_runs_and_force_reruns(tmp_path, tiny_suite, capsys):
    assert cli(tmp_path, "--methods", "full") == 0
    path = tmp_path / "out/records/tiny-majority/full/seed0.json"
    first = path.read_bytes()
    capsys.readouterr()
    assert cli(tmp_path, "--methods", "full") == 0
    assert "1 of 1 runs already done" in capsys.readouterr().err and path.read_bytes() == first
    assert cli(tmp_path, "--methods", "full", "--force") == 0
    assert path.read_bytes() != first  # rewritten (train seconds differ)


def test_config_json_holds_the_resolved_configs(tmp_path, tiny_suite):
    assert cli(tmp_path, "--methods", "sdpa", "--set", "train.lr=0.01") == 0
    config = json.loads((tmp_path / "out/config.json").read_text())
    run = config["runs"]["tiny-majority/sdpa/seed0"]
    assert run["config"]["train"]["lr"] == 0.01 and run["config"]["model"]["attention"] == "sdpa"


def test_bare_invocation_runs_the_suite_and_renders_its_report(tmp_path, tiny_suite, monkeypatch):
    import harness.cli as cli_module

    monkeypatch.setitem(cli_module.COMMON_DEFAULTS, "suite", "tiny")  # bare = the default suite + report
    monkeypatch.setitem(cli_module.COMMON_DEFAULTS, "set", ["train.steps=5", "train.eval_every=5"])
    monkeypatch.setitem(cli_module.COMMON_DEFAULTS, "device", "cpu")
    import harness.measure.efficiency_options as efficiency

    monkeypatch.setattr(efficiency, "MAIN_JOB_SEQ_LENS", [16, 32])  # the real one goes to n=4096
    monkeypatch.setattr(efficiency, "MAIN_JOB_OPTIONS", {"num_heads": 1, "head_dim": 8, "scopes": ["core"],
                                                         "passes": ["forward"], "min_reps": 2, "rep_budget_s": 0.0})
    monkeypatch.chdir(tmp_path)
    assert main([]) == 0
    assert (tmp_path / "runs/tiny/records/tiny-majority/full/seed0.json").exists()
    rows = json.loads((tmp_path / "runs/tiny/efficiency.json").read_text())["rows"]  # beside the records
    assert {(r["method"], r["seq_len"]) for r in rows} == {(m, n) for m in ("sdpa", "full") for n in (16, 32)}
    assert (tmp_path / "runs/tiny/report/index.md").exists()


def test_bare_invocation_trains_the_suites_main_job_tasks_unless_told(tmp_path, tiny_tasks, monkeypatch, capsys):
    from harness.config.suites import SUITES, Suite, plain, register_suite
    import harness.measure.efficiency_options as efficiency

    register_suite(Suite(name="two-tasks", description="tests", tasks=("tiny-majority", "tiny-copy"),
                         methods=(plain("sdpa"),), family="lra", main_job_tasks=("tiny-copy",)))
    try:
        monkeypatch.setattr(efficiency, "MAIN_JOB_SEQ_LENS", [16])
        monkeypatch.setattr(efficiency, "MAIN_JOB_OPTIONS", {"num_heads": 1, "head_dim": 8, "scopes": ["core"],
                                                             "passes": ["forward"], "min_reps": 2, "rep_budget_s": 0.0})
        flags = ["--suite", "two-tasks", "--device", "cpu", "--data-dir", str(tmp_path / "data"),
                 "--set", "train.steps=2", "--set", "train.eval_every=2"]
        assert main(flags + ["--out", str(tmp_path / "main")]) == 0
        assert "main job: suite two-tasks on tiny-copy (`run --suite two-tasks` trains all its tasks)" in capsys.readouterr().err
        assert [p.name for p in (tmp_path / "main/records").iterdir()] == ["tiny-copy"]
        assert main(flags + ["--out", str(tmp_path / "told"), "--tasks", "tiny-majority"]) == 0
        assert [p.name for p in (tmp_path / "told/records").iterdir()] == ["tiny-majority"]
        assert main(["run"] + flags + ["--out", str(tmp_path / "run")]) == 0
        assert sorted(p.name for p in (tmp_path / "run/records").iterdir()) == ["tiny-copy", "tiny-majority"]
    finally:
        SUITES.remove("two-tasks")


def test_report_of_a_missing_directory_exits_2(tmp_path, capsys):
    assert main(["report", str(tmp_path / "nothing")]) == 2
    assert "is not a directory of results" in one_line_error(capsys)


def test_efficiency_glue_passes_flags_and_typed_options(tmp_path):
    assert main(["efficiency", "--methods", "sdpa", "--seq-lens", "32", "--device", "cpu", "--out", str(tmp_path),
                 "--set", "efficiency.num_heads=1", "--set", "efficiency.head_dim=8", "--set", "efficiency.scopes=[\"core\"]",
                 "--set", "efficiency.passes=[\"forward\"]", "--set", "efficiency.min_reps=1", "--set", "efficiency.max_reps=1",
                 "--set", "efficiency.rep_budget_s=0.01"]) == 0
    rows = json.loads((tmp_path / "efficiency.json").read_text())["rows"]
    assert {(r["method"], r["seq_len"], r["scope"], r["pass"]) for r in rows} >= {("sdpa", 32, "core", "forward")}


def test_efficiency_option_errors_exit_2(tmp_path, capsys):
    assert main(["efficiency", "--methods", "sdpa", "--seq-lens", "32", "--device", "cpu", "--out", str(tmp_path),
                 "--set", "efficiency.num_hedas=1"]) == 2
    assert "--set efficiency: unknown key 'num_hedas' (did you mean 'num_heads'?)" in one_line_error(capsys)


def test_generate_prepares_each_task_once(tmp_path, tiny_suite, capsys):
    assert main(["generate", "--suite", "tiny", "--data-dir", str(tmp_path), "--set", "data.num_examples=64"]) == 0
    assert capsys.readouterr().out.strip() == f"tiny-majority: train 64, val 32, test 32 (in {tmp_path})"


def test_efficiency_exits_1_when_a_cell_errors(tmp_path, restore_attention_registry, capsys):
    @register_attention("test-efficiency-broken")
    class Broken(FullAttention):
        def forward(self, q, k, v, key_padding_mask=None):
            raise ValueError("broken")

    assert main(["efficiency", "--methods", "test-efficiency-broken", "--seq-lens", "16", "--device", "cpu",
                 "--out", str(tmp_path), "--set", "efficiency.num_heads=1", "--set", "efficiency.head_dim=8", "--set", "efficiency.scopes=[\"core\"]",
                 "--set", "efficiency.passes=[\"forward\"]", "--set", "efficiency.min_reps=2", "--set", "efficiency.rep_budget_s=0.01"]) == 1
    rows = json.loads((tmp_path / "efficiency.json").read_text())["rows"]
    assert {r["method"]: r["status"] for r in rows} == {"sdpa": "ok", "full": "ok", "test-efficiency-broken": "error"}
    assert "1 cells raised an error" in capsys.readouterr().out
