"""The README's result blocks are what scripts/update_readme.py gives from results/ (no drift)."""

import re
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
SCRIPT = [sys.executable, str(REPO / "scripts" / "update_readme.py")]


def run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([*SCRIPT, *args], cwd=REPO, capture_output=True, text=True, timeout=300,
                          env={"MPLBACKEND": "Agg", "PATH": "/usr/bin:/bin", "OMP_NUM_THREADS": "1"})


def test_committed_readme_matches_results():
    result = run("--check")
    assert result.returncode == 0, result.stderr
    assert "0 problems" in result.stdout and "result blocks checked" in result.stdout


def test_check_fails_on_an_edited_block_and_a_missing_figure(tmp_path):
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    assert "<!-- results:quick/accuracy -->" in readme
    edited = tmp_path / "README.md"
    # Mutation: one accuracy cell hand-edited (the drift the check exists for): sdpa's first figure + 1.
    cell = re.search(r"(\| sdpa +\| )(\d+)\.(\d\d) ±", readme)
    drifted = readme[:cell.start(2)] + str(int(cell[2]) + 1) + readme[cell.end(2):]
    assert drifted != readme
    edited.write_text(drifted, encoding="utf-8")
    result = run("--check", "--readme", str(edited))
    assert result.returncode == 1
    assert "block quick/accuracy differs" in result.stderr
    edited.write_text(readme + "\n![gone](results/quick/report/nothing.png)\n", encoding="utf-8")
    result = run("--check", "--readme", str(edited))
    assert result.returncode == 1 and "results/quick/report/nothing.png, which does not exist" in result.stderr


def test_unknown_block_is_bad_input(tmp_path):
    edited = tmp_path / "README.md"
    edited.write_text("<!-- results:quick/nonsense -->\n<!-- /results:quick/nonsense -->\n", encoding="utf-8")
    result = run("--check", "--readme", str(edited))
    assert result.returncode == 2 and "unknown part 'nonsense'" in result.stderr


def test_speed_block_drift_and_a_missing_speed_file_are_caught(tmp_path):
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    edited = tmp_path / "README.md"
    # Mutation: TC's step ratio hand-edited in the speed block.
    drifted = re.sub(r"(\| treeformer-tc \| [\d.]+ \| )(\d)", lambda m: m[1] + str((int(m[2]) + 1) % 10), readme, count=1)
    assert drifted != readme
    edited.write_text(drifted, encoding="utf-8")
    result = run("--check", "--readme", str(edited))
    assert result.returncode == 1 and "block treeformer_speed/speed_threads2 differs" in result.stderr
    edited.write_text("<!-- results:treeformer_speed/speed_threads7 -->\n<!-- /results:treeformer_speed/speed_threads7 -->\n",
                      encoding="utf-8")
    result = run("--check", "--readme", str(edited))
    assert result.returncode == 2 and "speed_threads7.json" in result.stderr
