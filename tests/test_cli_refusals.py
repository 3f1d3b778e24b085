"""One line and a meaningful exit status for what the subcommands cannot do (issue 22's bad-input
cases): unwritable folders, data too large for memory, flags of another subcommand, misspelt flags,
report selections naming nothing, an empty results folder. Nothing trains; each case is refused
while parsing or planning, in well under a second."""

from pathlib import Path

import pandas as pd
import pytest

from harness.cli import main
from report_support import add_run

UNWRITABLE = "/proc/treeformer-bench-test"  # no one can create anything under /proc, root included
SMOKE = ["--suite", "smoke", "--methods", "full", "--seeds", "0", "--device", "cpu"]

# (id, argv with {out}, {data}, {results} (a folder of two runs) and {empty} (an empty folder),
#  exit status, substrings of the one `error:` line)
CASES = [
    ("run-out-unwritable", ["run", *SMOKE, "--out", f"{UNWRITABLE}/out", "--data-dir", "{data}"], 2,
     [f"--out {UNWRITABLE}/out: not writable", "/proc is not"]),
    ("dry-run-out-unwritable", ["run", *SMOKE, "--dry-run", "--out", f"{UNWRITABLE}/out"], 2, ["--out", "not writable"]),
    ("run-data-dir-unwritable", ["run", *SMOKE, "--out", "{out}", "--data-dir", f"{UNWRITABLE}/data"], 2,
     [f"--data-dir {UNWRITABLE}/data: not writable"]),
    ("generate-data-dir-unwritable", ["generate", "--suite", "smoke", "--data-dir", f"{UNWRITABLE}/data"], 2,
     ["--data-dir", "not writable"]),
    ("report-dir-unwritable", ["report", "/proc"], 2, ["report /proc: not writable"]),
    ("generate-data-beyond-memory", ["generate", "--suite", "smoke", "--tasks", "mqar", "--data-dir", "{data}",
                                     "--set", "data.num_examples=1000000000000"], 2,
     ["data.num_examples=1000000000000", "task 'mqar'", "GiB of memory available", "lower data.num_examples"]),
    ("run-data-beyond-memory", ["run", *SMOKE, "--tasks", "mqar", "--out", "{out}", "--data-dir", "{data}",
                                "--set", "data.num_examples=1000000000000"], 2, ["data.num_examples=1000000000000"]),
    ("report-run-flag", ["report", "{results}", "--executor", "ray"], 2,
     ["report: --executor does not apply to report", "its flags: "]),
    ("report-run-flag-before-command", ["--force", "report", "{results}"], 2, ["report: --force does not apply"]),
    ("report-config", ["report", "{results}", "--config", "x.yaml"], 2, ["--config does not apply to report"]),
    ("generate-seeds", ["generate", "--suite", "smoke", "--seeds", "7"], 2, ["generate: --seeds does not apply"]),
    ("generate-out", ["generate", "--suite", "smoke", "--out", "{out}"], 2, ["generate: --out does not apply"]),
    ("list-out", ["list", "--out", "{out}"], 2, ["list: --out does not apply to list (its flags: --plugin, --debug)"]),
    ("misspelt-flag", ["run", *SMOKE, "--forse"], 2, ["run: unknown flag --forse; did you mean --force"]),
    ("misspelt-dry-run", ["run", *SMOKE, "--dry-rn"], 2, ["did you mean --dry-run?"]),
    ("stray-argument", ["report", "{results}", "extra"], 2, ["report: unexpected argument 'extra'"]),
    ("report-unknown-task", ["report", "{results}", "--tasks", "bogus-task"], 2,
     ["report --tasks: no record of task 'bogus-task'", "tasks listops"]),
    ("report-unknown-method", ["report", "{results}", "--methods", "full,tree"], 2, ["no record of method 'tree'"]),
    ("report-unknown-seed", ["report", "{results}", "--seeds", "7"], 2, ["no record of seed 7", "seeds 0, 1"]),
    ("report-empty-folder", ["report", "{empty}"], 2, ["holds no run records", "nothing to report"]),
]


@pytest.fixture
def places(tmp_path):
    results = tmp_path / "results"
    for seed in (0, 1):
        add_run(results, "listops", "full", seed)
    add_run(results, "listops", "sdpa", 0)
    (tmp_path / "empty").mkdir()
    return {"out": tmp_path / "out", "data": tmp_path / "data", "results": results, "empty": tmp_path / "empty"}


@pytest.mark.parametrize("argv, status, expected", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_refused_with_one_line(places, capsys, argv, status, expected):
    argv = [arg.format(**places) for arg in argv]
    assert main(argv) == status
    captured = capsys.readouterr()
    assert captured.err.startswith("error: ") and captured.err.count("\n") == 1, captured.err
    for part in expected:
        assert part in captured.err, captured.err
    assert not places["out"].exists() and not places["data"].exists()  # refused before writing anything
    assert not (places["results"] / "report").exists() and not (places["empty"] / "report").exists()


def test_report_selection_shows_only_the_selected_runs(places, capsys):
    results = places["results"]
    assert main(["report", str(results), "--methods", "full", "--seeds", "1"]) == 0, capsys.readouterr().err
    runs = pd.read_csv(results / "report" / "runs.csv")
    assert list(zip(runs["method"], runs["seed"])) == [("full", 1)]
    assert "selected runs only: methods full; seeds 1" in (results / "report" / "index.md").read_text()
    assert main(["report", str(results)]) == 0  # unselected: every run again
    assert len(pd.read_csv(results / "report" / "runs.csv")) == 3


def test_help_of_a_subcommand_lists_only_its_flags(capsys):
    with pytest.raises(SystemExit):
        main(["report", "--help"])
    text = capsys.readouterr().out
    assert "--methods" in text and "--out" in text
    for flag in ("--executor", "--force", "--run-timeout", "--set", "--data-dir"):
        assert flag not in text


def test_a_read_only_data_dir_that_holds_data_is_accepted(tmp_path):
    """A prepared, shared cache may be read-only: only an empty or missing data folder must be writable."""
    from harness.cli import check_data_dir_flag

    prepared = Path("/proc/self")  # holds entries, not writable
    assert check_data_dir_flag(prepared) == prepared
