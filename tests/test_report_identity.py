"""`report` counts each run once: a record copied under another seed or method name, or edited to
look like another run, is left out by name and the report exits 1; genuine runs are all counted."""

import json
import shutil
from pathlib import Path

import pandas as pd
import pytest

from harness.cli import main
from harness.config.layered import config_hash
from harness.sweep.records import record_path
from report_support import add_run


def copy_to(source: Path, out: Path, task: str, method: str, seed: int, edit=None) -> Path:
    target = record_path(out, task, method, seed)
    target.parent.mkdir(parents=True, exist_ok=True)
    record = json.loads(source.read_text())
    if edit:
        edit(record)
    target.write_text(json.dumps(record))
    return target


def set_seed(record, seed, in_config=False, rehash=False):
    record["seed"] = seed
    if in_config:
        record["config"]["seed"] = seed
    if rehash:
        record["config_hash"] = config_hash(record["config"])


# (id, where the copy of listops/full/seed0 goes, how it is edited, a part of its left-out line)
COPIES = [
    ("other-seed-name", ("listops", "full", 1), None, "its seed is 0 but its path says '1'"),
    ("other-method-name", ("listops", "sdpa", 0), None, "its method is 'full' but its path says 'sdpa'"),
    ("other-task-name", ("text", "full", 0), None, "its task is 'listops' but its path says 'text'"),
    ("seed-field-edited", ("listops", "full", 1), lambda r: set_seed(r, 1), "but its config says 0"),
    ("config-edited-hash-kept", ("listops", "full", 1), lambda r: set_seed(r, 1, in_config=True),
     "is not the hash of its config"),
    ("everything-edited", ("listops", "full", 1), lambda r: set_seed(r, 1, in_config=True, rehash=True),
     "the same run as"),
]


def counted_runs(out: Path) -> list[tuple[str, str, int]]:
    runs = pd.read_csv(out / "report" / "runs.csv")
    return sorted(zip(runs["task"], runs["method"], runs["seed"]))


@pytest.mark.parametrize("where, edit, reason", [c[1:] for c in COPIES], ids=[c[0] for c in COPIES])
def test_a_copied_record_is_left_out_by_name_and_exits_1(tmp_path, capsys, where, edit, reason):
    out = tmp_path / "out"
    source = add_run(out, "listops", "full", 0)
    add_run(out, "listops", "full", 2)
    copy = copy_to(source, out, *where, edit=edit)
    assert main(["report", str(out)]) == 1
    err = capsys.readouterr().err
    [line] = [line for line in err.splitlines() if str(copy) in line]
    assert line.startswith("report: left out: ") and reason in line, line
    assert counted_runs(out) == [("listops", "full", 0), ("listops", "full", 2)]
    assert str(copy) in (out / "report" / "index.md").read_text()


def test_genuine_runs_are_all_counted(tmp_path, capsys):
    out = tmp_path / "out"
    for seed in (0, 1, 2):
        add_run(out, "listops", "full", seed)
    add_run(out, "listops", "sdpa", 0)
    assert main(["report", str(out)]) == 0, capsys.readouterr().err
    assert counted_runs(out) == [("listops", "full", 0), ("listops", "full", 1), ("listops", "full", 2),
                                 ("listops", "sdpa", 0)]
    shutil.rmtree(out / "report")

