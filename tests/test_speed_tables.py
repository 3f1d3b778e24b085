"""harness/report/speed_tables.py: the speed benchmark's payload as the report and README show it."""

from harness.report.speed_tables import speed_report


def payload(**changes):
    entry = {"method": "treeformer-tc", "seq_len": 128, "status": "ok", "reason": None, "time_ms": 131.0,
             "ratio_to_sdpa": 1.254, "ratio_ci95": [1.2, 1.31], "pairs": 9, "extra_memory_mb": None,
             "memory_ratio_to_sdpa": None}
    layer = {**entry, "method": "treeformer-tc h=5", "seq_len": 4096, "ratio_to_sdpa": 0.14, "ratio_ci95": None,
             "pairs": 3, "extra_memory_mb": 47.25, "memory_ratio_to_sdpa": 1.24}
    base = {"env": {"machine": "vm x86_64, 2 cores", "threads": 2, "versions": {"torch": "2.13.0", "python": "3.11"},
                    "git_commit": "abc", "date_utc": "2026-12-05T03:00:00Z", "load_average": [0.5, 0.7, 1.0],
                    "load_average_end": [2.0, 1.9, 1.5], "command": "python scripts/bench_treeformer.py"},
            "steps": [entry], "rows": [layer],
            "targets": [{"target": "treeformer-tc training step at n=128 <= 1.2x sdpa's", "measured": 1.254,
                         "ci95": [1.2, 1.31], "met": False},
                        {"target": "treeformer-tc h=5 layer time at n=8192 <= 0.07x sdpa", "measured": None,
                         "ci95": None, "met": None}],
            "notes": {"treeformer-tc h=5": "all-nodes", "sdpa": ""}}
    return {**base, **changes}


def test_report_shows_ratios_with_intervals_targets_and_provenance():
    text = speed_report(payload())
    assert "| treeformer-tc | 131.0 | 1.254x [1.200-1.310] | 9 | ok |" in text
    assert "| treeformer-tc h=5 | 4096 | 131.0 | 0.140x [too few pairs] | 3 | 47.2 | 1.24 | ok |" in text
    assert "| treeformer-tc training step at n=128 <= 1.2x sdpa's | 1.254 | 1.200-1.310 | no |" in text
    assert "| treeformer-tc h=5 layer time at n=8192 <= 0.07x sdpa | - | - | not measured |" in text
    assert "load average at start 0.5, 0.7, 1.0, at end 2.0, 1.9, 1.5" in text
    assert "- treeformer-tc h=5: all-nodes" in text and "- sdpa:" not in text  # empty notes are left out


def test_missing_parts_leave_their_tables_out():
    text = speed_report(payload(steps=[], notes=None), heading="####")
    assert "Training step" not in text and "#### One attention layer" in text and "Method notes" not in text
