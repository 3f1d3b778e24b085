"""`run --dry-run` says what the real run with the same flags does to each run, conflicts included:
a finished record of another config is reported, and refused (exit 2) with the real run's line."""

import json

import pytest

from harness.cli import main


def args(tmp_path, *extra):
    return ["run", "--suite", "tiny", "--methods", "full", "--out", str(tmp_path / "out"), "--data-dir",
            str(tmp_path / "data"), "--device", "cpu", "--set", "train.eval_every=2", *extra]


# (id, flags after the finished run's, exit status, each planned run's (seed, action, record_exists))
CASES = [
    ("same-config", ["--seeds", "0", "--set", "train.steps=4"], 0, [(0, "skip", True)]),
    ("other-config", ["--seeds", "0", "--set", "train.steps=6"], 2, [(0, "refuse", False)]),
    ("other-config-forced", ["--seeds", "0", "--set", "train.steps=6", "--force"], 0, [(0, "rerun", False)]),
    ("new-seed-beside", ["--seeds", "0,1", "--set", "train.steps=4"], 0, [(0, "skip", True), (1, "run", False)]),
]


@pytest.fixture
def finished(tmp_path, tiny_suite, capsys):
    assert main(args(tmp_path, "--seeds", "0", "--set", "train.steps=4")) == 0
    capsys.readouterr()
    return tmp_path


@pytest.mark.parametrize("flags, status, planned", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_dry_run_plans_what_the_run_does(finished, capsys, flags, status, planned):
    assert main(args(finished, *flags, "--dry-run")) == status
    captured = capsys.readouterr()
    lines = [json.loads(line) for line in captured.out.splitlines()]
    assert [(line["seed"], line["action"], line["record_exists"]) for line in lines] == planned
    if status == 0:
        assert captured.err == ""
        return
    [refused] = [line for line in lines if line["action"] == "refuse"]
    assert "train.steps: 4 -> 6" in refused["conflict"] and "seed0.json" in refused["conflict"]
    assert captured.err.count("\n") == 1 and refused["conflict"] in captured.err
    assert main(args(finished, *flags)) == status  # the real run: refused with the same line
    assert capsys.readouterr().err == captured.err
