"""Small sweep messages that must say what happened: a damaged record is redone with a line naming
it, finished runs leave no empty checkpoint folders, a progress line gives the run's own time, a
refusal lists only real differences, an out-of-memory row under a cap names the cap."""

import re

import pytest

import executor_probes as probes
from harness.cli import main
from harness.sweep.driver import config_changes
from harness.sweep.executors import get_executor
from harness.sweep.records import RunSpec
from reliability_support import one_thread  # noqa: F401  (fixture)


def run_args(tmp_path, *extra):
    return ["run", "--suite", "tiny", "--methods", "full", "--seeds", "0", "--out", str(tmp_path / "out"),
            "--data-dir", str(tmp_path / "data"), "--device", "cpu", "--set", "train.steps=4",
            "--set", "train.eval_every=2", *extra]


# (id, old config, new config, the refusal's list of differences)
CHANGES = [
    ("empty-section-is-no-difference", {"model": {"attention_options": {}}}, {"model": {"attention_options": {"k": 8}}},
     "model.attention_options.k: (absent) -> 8"),
    ("emptied-section", {"model": {"attention_options": {"k": 8}}}, {"model": {"attention_options": {}}},
     "model.attention_options.k: 8 -> (absent)"),
    ("value-change", {"train": {"steps": 20}}, {"train": {"steps": 5}}, "train.steps: 20 -> 5"),
]


@pytest.mark.parametrize("old, new, expected", [c[1:] for c in CHANGES], ids=[c[0] for c in CHANGES])
def test_refusal_lists_only_real_differences(old, new, expected):
    assert config_changes(old, new) == expected


def truncate(path):
    path.write_bytes(path.read_bytes()[:40])


def empty(path):
    path.write_bytes(b"")


# (id, damage done to the finished record, part of the line naming it)
DAMAGE = [("truncated", truncate, "malformed record JSON"), ("emptied", empty, "malformed record JSON")]


@pytest.mark.parametrize("damage, reason", [c[1:] for c in DAMAGE], ids=[c[0] for c in DAMAGE])
def test_damaged_record_is_redone_with_a_line_and_no_empty_folder_stays(tmp_path, tiny_suite, one_thread, capsys,
                                                                          damage, reason):
    out = tmp_path / "out"
    assert main(run_args(tmp_path)) == 0
    first = capsys.readouterr()
    assert not (out / "checkpoints").exists()  # the finished run left neither checkpoint nor folders
    assert re.search(r"^\[1/1\] tiny-majority/full/seed0: ok .* \[\d+s; sweep \d+s\]$", first.out, re.M), first.out
    record = out / "records" / "tiny-majority" / "full" / "seed0.json"
    damage(record)
    assert main(run_args(tmp_path)) == 0
    err = capsys.readouterr().err
    [line] = [line for line in err.splitlines() if line.startswith("redoing ")]
    assert line.startswith("redoing tiny-majority/full/seed0: its record is damaged (") and reason in line
    assert str(record) in line
    assert record.stat().st_size > 100 and not (out / "checkpoints").exists()


@pytest.mark.slow
def test_oom_row_under_a_memory_cap_names_the_cap():
    executor = get_executor("subprocess", memory_gb=1)
    spec = RunSpec(method="full", task="t", seed=4, config={"device": "cpu"}, config_hash="h")
    record = executor.run_one(probes.by_seed, spec)  # seed 4 allocates 4 GiB
    assert record["status"] == "oom"
    assert record["reason"].startswith("MemoryError") and record["reason"].endswith("--run-memory-gb 1)")
