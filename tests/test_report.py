"""The report renderer over synthetic record files: cells, averages, files, and no model imports.

Records are built by hand in the schema of docs/records.md (metrics.baselines, still_learning, MACs over
the test split); fields an older record lacks are left out to check that the report says so.
"""

import json
import shutil
import statistics
import subprocess
import sys
import zlib
from pathlib import Path

import pandas as pd
import pytest

from bench_common import BenchError
from harness.cli import main
from harness.sweep.records import METRIC_KEYS, SCHEMA, write_json_atomic
from harness.report.render import render_report

REPO = Path(__file__).resolve().parent.parent


T_975_DF2 = 4.302652729911275  # Student t quantile, 97.5%, 2 degrees of freedom (tables: 4.303)


def write_record(run_dir: Path, method: str, task: str, seed: int, status: str = "ok",
                 accuracy: float | None = None, macs: int | None = 1000, reason: str | None = None,
                 majority: float | None = None, still_learning: bool | None = None,
                 macs_range: tuple[int, int] | None = None, config: dict | None = None,
                 match_macs: dict | None = None) -> None:
    metrics = {key: None for key in METRIC_KEYS}
    if majority is not None:
        metrics["baselines"] = {"majority": majority, "chance": 0.1}
    if still_learning is not None:
        metrics["still_learning"] = still_learning
    history = [{"step": s, "train_loss": 1.0 / s, "val_accuracy": (accuracy or 0.5) * s / 300} for s in (100, 200, 300)]
    # Distinct runs never time identically; equal timings would make the report count them once.
    train_seconds = 12.0 + zlib.crc32(f"{task}/{method}/{seed}".encode()) % 1000 / 1000
    metrics.update(test_accuracy=accuracy, val_accuracy=accuracy, best_step=300, steps=300, train_seconds=train_seconds,
                   steps_per_second=25.0, tokens_per_second=1e4, peak_memory_mb=80.0,
                   history=history if status == "ok" else [])
    record = {
        "schema": SCHEMA, "method": method, "attention": method, "task": task, "task_version": 1, "seed": seed,
        "status": status, "reason": reason, "metrics": metrics,
        "flops": None if macs is None else {
            "unit": "MACs", "attention_core_macs": macs, "attention_algorithmic_macs": macs,
            "attention_layer_macs": 2 * macs, "total_macs": 5 * macs, "unsupported_ops": {},
            **({"attention_core_macs_min": macs_range[0], "attention_core_macs_max": macs_range[1]}
               if macs_range else {})},
        "diagnostics": {}, "bootstrap": [], "suite": "synthetic",
        "config": {**(config or {}), **({"runtime": {"match_macs": match_macs}} if match_macs else {})},
        "config_hash": "x",
        "env": {"versions": {}, "device": "cpu (test)", "machine": "test", "git_commit": "abc123", "command": "test"},
    }
    write_json_atomic(run_dir / "records" / task / method / f"seed{seed}.json", record)


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    """Three methods on three tasks; 'linformer' OOMs on 'image', 'performer' has one failed seed;
    plus efficiency rows. Shared by the tests that only read it (rendering takes seconds)."""
    tmp_path = tmp_path_factory.mktemp("run")
    for seed, (a, b) in enumerate([(0.60, 0.70), (0.62, 0.74), (0.64, 0.72)]):
        write_record(tmp_path, "full", "listops", seed, accuracy=a, macs=4_000_000)
        write_record(tmp_path, "full", "text", seed, accuracy=b, macs=4_000_000)
        write_record(tmp_path, "full", "image", seed, accuracy=0.40, macs=4_000_000)
        write_record(tmp_path, "linformer", "listops", seed, accuracy=a - 0.1, macs=1_000_000)
        write_record(tmp_path, "linformer", "text", seed, accuracy=b - 0.1, macs=1_000_000)
        write_record(tmp_path, "linformer", "image", seed, status="oom", reason="CUDA out of memory", macs=None)
        write_record(tmp_path, "performer", "listops", seed, accuracy=0.5, macs=2_000_000)
        write_record(tmp_path, "performer", "image", seed, accuracy=0.3, macs=2_000_000)
        text_status = "diverged" if seed == 1 else "ok"
        write_record(tmp_path, "performer", "text", seed, status=text_status, accuracy=0.9 if seed != 1 else None)
    write_efficiency(tmp_path)
    return tmp_path


@pytest.fixture(scope="module")
def report_dir(run_dir):
    return render_report(run_dir).out


def write_efficiency(run_dir: Path) -> None:
    rows = []
    for n in (256, 512):
        for scope in ("core", "layer"):
            for pass_ in ("forward", "forward_backward"):
                for method, time_ms, ratio in (("sdpa", 1.0 * n, 1.0), ("full", 2.0 * n, 2.0), ("linformer", 0.5 * n, 0.5)):
                    rows.append({"method": method, "seq_len": n, "scope": scope, "pass": pass_, "status": "ok",
                                 "time_ms": time_ms, "ratio_to_sdpa": ratio, "peak_memory_mb": n / 100,
                                 "macs": n * 1000, "reason": None})
                rows.append({"method": "xformers", "seq_len": n, "scope": scope, "pass": pass_, "status": "unsupported",
                             "time_ms": None, "ratio_to_sdpa": None, "peak_memory_mb": None, "macs": None,
                             "reason": "xformers needs a CUDA device"})
    (run_dir / "efficiency.json").write_text(json.dumps({"env": {"device": "cpu"}, "rows": rows}))


def test_accuracy_table_cells_and_average(report_dir):
    out = report_dir
    table = pd.read_csv(out / "accuracy.csv", index_col="method", dtype=str)
    listops = [60, 62, 64]
    half_width = T_975_DF2 * statistics.stdev(listops) / 3 ** 0.5  # 95% t interval, n = 3: 4.97
    assert table.loc["full", "listops"] == f"{statistics.mean(listops):.2f} ± {half_width:.2f}"
    assert table.loc["linformer", "image"] == "OOM"  # never a number, never 0
    assert table.loc["performer", "text"] == "DIVERGED (1/3 runs)"  # not the mean of the ok seeds
    # Avg covers only listops: image (linformer OOM) and text (performer diverged) are not all ok.
    assert list(table.columns) == ["image", "listops", "text", "Avg (1)"]  # tasks in name order
    assert float(table.loc["full", "Avg (1)"]) == pytest.approx(62.0)
    assert float(table.loc["linformer", "Avg (1)"]) == pytest.approx(52.0)
    macs = pd.read_csv(out / "macs.csv", index_col="method", dtype=str)
    assert macs.loc["full", "listops"] == "4 M" and macs.loc["linformer", "image"] == "—"


def test_average_excludes_a_failed_task_instead_of_counting_zero(tmp_path):
    for seed in (0, 1):
        write_record(tmp_path, "full", "a", seed, accuracy=0.8)
        write_record(tmp_path, "full", "b", seed, accuracy=0.6)
        write_record(tmp_path, "tree", "a", seed, accuracy=0.7)
        write_record(tmp_path, "tree", "b", seed, status="error", reason="boom")
    table = pd.read_csv(render_report(tmp_path).out / "accuracy.csv", index_col="method", dtype=str)
    assert table.loc["tree", "b"] == "FAIL"
    assert float(table.loc["tree", "Avg (1)"]) == pytest.approx(70.0)  # a only; with b as 0 it would be 35
    assert float(table.loc["full", "Avg (1)"]) == pytest.approx(80.0)


def test_every_file_is_written_and_the_index_shows_them(report_dir):
    out = report_dir
    for name in ("accuracy.md", "accuracy.tex", "accuracy.csv", "macs.md", "macs.tex", "macs.csv", "cost.md",
                 "cells.csv", "runs.csv", "efficiency.md", "efficiency.csv", "accuracy_vs_macs.png",
                 "time_vs_length.png", "memory_vs_length.png", "training_curves.png", "index.md", "index.html"):
        assert (out / name).stat().st_size > 0, name
    index = (out / "index.md").read_text()
    for image in ("accuracy_vs_macs.png", "time_vs_length.png", "memory_vs_length.png", "training_curves.png"):
        assert f"]({image})" in index
        assert f'src="{image}"' in (out / "index.html").read_text()
    assert "linformer / seed 0: OOM (CUDA out of memory)" in index
    assert "\\pm" in (out / "accuracy.tex").read_text()
    efficiency = pd.read_csv(out / "efficiency.csv")
    linformer = efficiency[(efficiency["method"] == "linformer")]
    assert linformer["ratio_to_full"].tolist() == pytest.approx([0.25] * len(linformer))
    assert "| 510 (1.0x, 0.50x)" in (out / "efficiency.md").read_text()  # sdpa at 512 ms: x sdpa, x full
    assert "UNSUPPORTED" in (out / "efficiency.md").read_text()


def test_only_failed_runs_and_no_efficiency(tmp_path):
    write_record(tmp_path, "full", "listops", 0, status="timeout", reason="time limit")
    write_record(tmp_path, "tree", "listops", 0, status="error", reason="boom")
    out = render_report(tmp_path).out
    table = pd.read_csv(out / "accuracy.csv", index_col="method", dtype=str)
    assert table.loc["full", "listops"] == "TIMEOUT" and table.loc["tree", "listops"] == "FAIL"
    index = (out / "index.md").read_text()
    assert "No task has every run ok" in index and "No efficiency results" in index
    assert not (out / "accuracy_vs_macs.png").exists()


def test_empty_directory_and_a_damaged_record(tmp_path):
    with pytest.raises(BenchError, match="nothing to report"):
        render_report(tmp_path)
    assert not (tmp_path / "report").exists()
    write_record(tmp_path, "full", "listops", 0, accuracy=0.5)
    damaged = tmp_path / "records" / "listops" / "tree" / "seed0.json"
    damaged.parent.mkdir(parents=True)
    damaged.write_text('{"schema": 1, "method": ')
    index = (render_report(tmp_path).out / "index.md").read_text()
    assert "Left out of this report" in index and "malformed record JSON" in index
    assert "50.00" in index


def test_left_out_files_and_mixed_budgets_are_printed_and_exit_1(tmp_path, capsys):
    """Each problem one line on stderr and at the top of the index; the rest still rendered."""
    for seed in (0, 1):
        write_record(tmp_path, "full", "listops", seed, accuracy=0.5, config={"train": {"steps": 300}})
    write_record(tmp_path, "tree", "listops", 0, accuracy=0.6, config={"train": {"steps": 200}})  # other budget
    damaged = tmp_path / "records" / "listops" / "tree" / "seed1.json"
    damaged.write_text('{"schema": 1, "method": ')
    (tmp_path / "efficiency.json").write_text('{"rows": [')  # corrupt: left out, not fatal
    assert main(["report", str(tmp_path)]) == 1
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 3, err
    assert any("seed1.json" in line and "left out" in line for line in err)
    assert any("efficiency.json" in line and "left out" in line for line in err)
    assert any("budget: listops: train.steps differs" in line for line in err)
    index = (tmp_path / "report" / "index.md").read_text()
    assert "WARNING: runs of a task differ in budget" in index and "train.steps" in index
    assert index.index("WARNING") < index.index("## Accuracy")
    assert "No efficiency results" in index and "50.00" in index


def test_report_refuses_a_file_as_out_or_directory(tmp_path, capsys):
    afile = tmp_path / "results.txt"
    afile.write_text("x")
    assert main(["report", "--out", str(afile)]) == 2
    assert capsys.readouterr().err.strip() == f"error: --out {afile}: is a file; expected a directory"
    assert main(["report", str(afile)]) == 2
    assert "is a file" in capsys.readouterr().err


def test_render_report_never_imports_models_or_methods(run_dir, tmp_path):
    run_dir = shutil.copytree(run_dir, tmp_path / "copy")
    script = (
        "import sys; from pathlib import Path; from harness.report.render import render_report; "
        f"render_report(Path({str(run_dir)!r})); "
        "print(sorted(m for m in sys.modules if m.split('.')[0] in ('methods', 'torch', 'lra', 'fvcore') "
        "or m in ('harness.training.model', 'harness.measure.flops', 'harness.training.loop')))"
    )
    result = subprocess.run([sys.executable, "-c", script], cwd=REPO, capture_output=True, text=True, timeout=120,
                            env={"MPLBACKEND": "Agg", "PATH": "/usr/bin:/bin", "HOME": str(run_dir)})
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"
