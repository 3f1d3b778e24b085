"""Bad input found before any run starts: each case ends in exit 2 and one
`error:` line naming the flag or key and what was expected; nothing trains and no output is written.

Every case is refused while resolving (no training), so each takes well under a second."""

import pytest

from harness.cli import main

SMOKE = ["--suite", "smoke", "--methods", "full", "--seeds", "0", "--device", "cpu"]

# (id, argv after the subcommand and SMOKE, substrings of the one line). `{file}` is an existing file.
RUN_CASES = [
    ("out-is-a-file", ["--out", "{file}"], ["--out", "is a file; expected a directory"]),
    ("out-under-a-file", ["--out", "{file}/sub"], ["--out", "is under", "a file; expected a directory"]),
    ("data-dir-is-a-file", ["--data-dir", "{file}"], ["--data-dir", "is a file; expected a directory"]),
    ("num-heads-0", ["--set", "model.num_heads=0"], ["model.num_heads must be >= 1, got 0"]),
    ("num-layers-negative", ["--set", "model.num_layers=-1"], ["model.num_layers must be >= 1, got -1"]),
    ("lr-nan", ["--set", "train.lr=nan"], ["--set train.lr: expected a finite number, got nan"]),
    ("lr-inf", ["--set", "train.lr=inf"], ["--set train.lr: expected a finite number, got inf"]),
    ("data-param-nan", ["--set", "data.num_examples=NaN"], ["--set data.num_examples: expected a finite number"]),
    ("negative-seed", ["--seeds=-1"], ["--seeds", "seeds must be integers in [0, 2**32), got -1"]),
    ("huge-seed", ["--seeds", str(2**32)], ["--seeds", f"got {2**32}"]),
    ("empty-seed-item", ["--seeds", "0,,1"], ["--seeds", "without empty items", "'0,,1'"]),
    ("repeated-seed", ["--seeds", "0,1,0"], ["--seeds", "0 given twice in '0,1,0'"]),
    ("repeated-method", ["--methods", "full,sdpa,full"], ["--methods", "full given twice"]),
    ("trailing-comma-method", ["--methods", "full,"], ["--methods", "without empty items"]),
    ("dropout-2", ["--set", "model.dropout=2"], ["model.dropout must be in [0, 1), got 2.0"]),
    ("dropout-negative", ["--set", "model.dropout=-0.1"], ["model.dropout must be in [0, 1)"]),
    ("max-seq-len-below-task", ["--set", "model.max_seq_len=8"],
     ["model.max_seq_len=8 is below what task 'mqar' needs (64)"]),
    ("num-classes-below-task", ["--set", "model.num_classes=1"], ["model.num_classes=1 is below what task 'mqar'"]),
    ("device-by-set", ["--set", "device=gpu"], ["--set device: the device is chosen by the --device flag"]),
    ("device-by-set-cpu", ["--set", "device=cpu"], ["--set device: the device is chosen by the --device flag"]),
]


def one_line(capsys):
    captured = capsys.readouterr()
    assert captured.err.startswith("error: ") and captured.err.count("\n") == 1, captured.err
    assert "Traceback" not in captured.err and captured.out == ""
    return captured.err


@pytest.fixture
def a_file(tmp_path):
    path = tmp_path / "a_file"
    path.write_text("not a directory\n")
    return path


@pytest.mark.parametrize("argv, expected", [c[1:] for c in RUN_CASES], ids=[c[0] for c in RUN_CASES])
def test_bad_run_input_is_one_line_and_exit_2(tmp_path, a_file, capsys, argv, expected):
    argv = [arg.replace("{file}", str(a_file)) for arg in argv]
    defaults = ["--out", str(tmp_path / "out"), "--data-dir", str(tmp_path / "data")]
    assert main(["run", *SMOKE, *defaults, *argv]) == 2
    line = one_line(capsys)
    for part in expected:
        assert part in line, line
    assert not (tmp_path / "out").exists() and not (tmp_path / "data").exists()


def test_efficiency_out_naming_a_file(a_file, capsys):
    assert main(["efficiency", "--methods", "sdpa", "--seq-lens", "32", "--device", "cpu", "--out", str(a_file)]) == 2
    assert f"--out {a_file}: is a file; expected a directory" in one_line(capsys)


def test_generate_data_dir_naming_a_file(a_file, capsys):
    assert main(["generate", "--suite", "smoke", "--data-dir", str(a_file)]) == 2
    assert f"--data-dir {a_file}: is a file; expected a directory" in one_line(capsys)


def test_non_finite_number_in_a_config_file(tmp_path, capsys):
    path = tmp_path / "nan.yaml"
    path.write_text("train:\n  lr: .nan\n")
    assert main(["run", *SMOKE, "--out", str(tmp_path / "out"), "--config", str(path)]) == 2
    assert f"{path}: train.lr: expected a finite number, got nan" in one_line(capsys)


def test_device_in_a_config_file(tmp_path, capsys):
    path = tmp_path / "device.json"
    path.write_text('{"device": "cuda"}')
    assert main(["run", *SMOKE, "--out", str(tmp_path / "out"), "--config", str(path)]) == 2
    assert f"{path}: device: the device is chosen by the --device flag" in one_line(capsys)


def test_larger_than_task_values_are_accepted(tmp_path):
    from harness.sweep.driver import SweepRequest, resolve_specs

    request = SweepRequest(suite="smoke", methods=["full"], seeds=[0, 2**32 - 1], out=tmp_path / "out",
                           sets=["model.max_seq_len=80", "model.dropout=0.0"])
    specs = resolve_specs(request)
    assert [s.seed for s in specs] == [0, 2**32 - 1] and specs[0].config["model"]["max_seq_len"] == 80


def test_debug_shows_the_traceback_and_still_exits_2(capsys):
    assert main(["run", "--suite", "quik", "--debug"]) == 2
    err = capsys.readouterr().err
    assert "Traceback" in err and "BenchError" in err
    assert err.rstrip("\n").splitlines()[-1].startswith("error: unknown suite 'quik'")
