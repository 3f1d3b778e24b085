"""The crossover table and the check of efficiency rows a report reads (figures worked by hand)."""

import json

import pytest

from harness.report.efficiency_tables import crossover_table, efficiency_frame, row_problem
from harness.report.render import render_report

BASE = {"scope": "core", "pass": "forward", "status": "ok", "time_ms": 1.0, "tree": None}


def rows_with(pairs, reverse=False):
    """Methods a and b at four lengths; a/b time ratios `pairs` (ratio, interval) stored on a's row
    (or, reversed, as b/a on b's row); MACs a = 100 n, b = n^2 / 10, so a/b = 1000 / n."""
    rows = []
    for n, (ratio, interval) in zip((256, 512, 1024, 2048), pairs):
        a = {**BASE, "method": "a", "seq_len": n, "macs": 100 * n, "paired": {}}
        b = {**BASE, "method": "b", "seq_len": n, "macs": n * n / 10, "paired": {}}
        if reverse:
            b["paired"]["a"] = {"ratio": 1 / ratio, "ci95": [1 / interval[1], 1 / interval[0]]}
        else:
            a["paired"]["b"] = {"ratio": ratio, "ci95": interval}
        rows += [a, b]
    return rows


PAIRS = [(0.5, [0.45, 0.55]), (0.9, [0.8, 1.1]), (1.6, [1.5, 1.7]), (2.0, [1.9, 2.1])]


@pytest.mark.parametrize("reverse", [False, True])
def test_crossover_is_placed_between_lengths_whose_intervals_exclude_one(reverse):
    # Time: a is cheaper at 256 (interval below 1), undecided at 512 (interval holds 1), dearer from
    # 1024: the crossing is bracketed by 256 and 1024, at 256 * 4^(ln 2 / ln 3.2) = 584.6 on the
    # log-log line through (256, 0.5) and (1024, 1.6). Using the ratios without their intervals
    # would bracket it by 512 and 1024 instead. MACs: a/b = 1000/n crosses 1 at n = 1000 exactly.
    (line,) = crossover_table(efficiency_frame(rows_with(PAIRS, reverse))).to_dict("records")
    assert (line["A"], line["B"]) == ("a", "b")
    assert line["time (A/B)"] == "b cheaper from ~580 (between n=256: 0.50x [0.45, 0.55] and n=1024: 1.6x [1.5, 1.7])"
    assert line["executed MACs (A/B)"] == "a cheaper from ~1000 (between n=512: 2.0x and n=1024: 0.98x)"


def test_no_crossing_is_said_as_such():
    undecided = [(1.0, [0.9, 1.1])] * 4
    (line,) = crossover_table(efficiency_frame(rows_with(undecided))).to_dict("records")
    assert line["time (A/B)"] == "no crossing that the intervals support (n=256-2048; 1.0x [0.90, 1.1] at n=2048)"
    always = [(0.5, [0.4, 0.6])] * 4
    (line,) = crossover_table(efficiency_frame(rows_with(always))).to_dict("records")
    assert line["time (A/B)"].startswith("a cheaper at every length (n=256-2048; 0.50x [0.40, 0.60]")


@pytest.mark.parametrize("row, named", [
    ({"seq_len": 256, "scope": "core", "pass": "forward", "status": "ok", "time_ms": 1.0}, "field 'method' is None"),
    ({"method": "full", "scope": "core", "pass": "forward", "status": "ok", "time_ms": 1.0}, "field 'seq_len'"),
    ({"method": "full", "seq_len": 256, "scope": "core", "pass": "forward", "status": "ok"}, "'time_ms'"),
])
def test_rows_with_missing_fields_are_named_not_rendered(tmp_path, row, named):
    assert named in row_problem([row])
    (tmp_path / "efficiency.json").write_text(json.dumps({"rows": [row]}))
    report = render_report(tmp_path)
    (problem,) = [p for p in report.problems if "efficiency.json" in p]
    assert named in problem
    assert "nan" not in (report.out / "index.md").read_text()
