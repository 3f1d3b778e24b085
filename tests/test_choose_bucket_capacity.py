"""scripts/choose_bucket_capacity.py: kept fractions from leaf shares, and the factor it chooses."""

import json

import pytest

from report_support import add_run
from script_support import loaded_script


@pytest.fixture(scope="module")
def choose():
    yield from loaded_script("choose_bucket_capacity")


def test_kept_fraction_caps_each_leaf_at_its_capacity(choose):
    shares = [0.5, 0.25, 0.25, 0.0]  # 4 leaves: factor 1 keeps a quarter of the keys per leaf at most
    assert choose.kept_fraction(shares, 1) == pytest.approx(0.75)
    assert choose.kept_fraction(shares, 2) == pytest.approx(1.0)
    assert choose.kept_fraction([0.25] * 4, 1) == pytest.approx(1.0)  # balanced: nothing over capacity


def write_record(root, folder, task, seed, shares, attention="treeformer-tf", status="ok"):
    """A record as a sweep writes it (report_support), with one layer's leaf occupancy."""
    path = add_run(root / folder, task, attention, seed)
    record = json.loads(path.read_text())
    record["status"] = status
    record["diagnostics"] = {"layer0": {"leaves": len(shares), "leaf_occupancy": shares,
                                        "leaf_imbalance": max(shares) * len(shares)}}
    path.write_text(json.dumps(record))


def test_chooses_the_smallest_factor_keeping_enough_on_every_task(choose, tmp_path):
    write_record(tmp_path, "quick", "recall", 0, [0.7, 0.1, 0.1, 0.1])  # kept 0.55 / 0.8 / 1.0 at 1 / 2 / 4
    write_record(tmp_path, "quick", "listops", 0, [0.4, 0.2, 0.2, 0.2])  # kept 0.85 / 1.0 at 1 / 2
    write_record(tmp_path, "peers", "recall", 0, [0.7, 0.1, 0.1, 0.1])  # the same run (config hash) again: once
    write_record(tmp_path, "quick", "recall", 1, [0.25] * 4, attention="treeformer-tc")  # not TF
    write_record(tmp_path, "quick", "recall", 2, [0.25] * 4, status="error")  # not finished
    out = tmp_path / "capacity"
    assert choose.main(["--results", str(tmp_path), "--folders", "quick", "peers", "--out", str(out)]) == 0
    summary = json.loads(out.with_suffix(".json").read_text())
    assert summary["tasks"]["recall"]["layers"] == 1 and summary["tasks"]["listops"]["layers"] == 1
    assert summary["tasks"]["recall"]["kept_median"]["2"] == pytest.approx(0.8)
    assert summary["factor"] == 4  # recall needs 4 for 0.95; listops would do with 2
    assert choose.main(["--results", str(tmp_path), "--folders", "quick", "--keep", "0.75", "--out", str(out)]) == 0
    assert json.loads(out.with_suffix(".json").read_text())["factor"] == 2
    assert "| recall | 1 |" in out.with_suffix(".md").read_text()


def test_no_records_or_a_damaged_one_is_one_error_line_and_exit_2(choose, tmp_path, capsys):
    assert choose.main(["--results", str(tmp_path), "--out", str(tmp_path / "capacity")]) == 2
    assert capsys.readouterr().err.count("\n") == 1
    write_record(tmp_path, "quick", "recall", 0, [0.25] * 4)
    damaged = tmp_path / "quick" / "records" / "recall" / "treeformer-tf" / "seed1.json"
    damaged.write_text("{")
    assert choose.main(["--results", str(tmp_path), "--folders", "quick", "--out", str(tmp_path / "capacity")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "seed1.json" in err
