"""A report interrupted mid-rendering (a real SIGINT or kill -9 of `run_benchmark.py report`) leaves
the previous report exactly as it was; the next `report` replaces it whole, without stale files."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from harness.report.render import remove_abandoned_renderings, render_report
from harness.sweep.records import record_path
from conftest import default_sigint
from report_support import add_run

ROOT = Path(__file__).resolve().parent.parent
TASKS = ("listops", "text")


def files(directory: Path) -> dict[str, bytes]:
    return {p.relative_to(directory).as_posix(): p.read_bytes() for p in sorted(directory.rglob("*")) if p.is_file()}


def environment() -> dict[str, str]:
    return {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT), "MPLBACKEND": "Agg"}


def interrupt_mid_rendering(run_dir: Path, signum: int) -> subprocess.Popen:
    """Starts `report`, sends `signum` once it has written its first table (wherever it writes it),
    returns the process."""
    started = time.time_ns()
    proc = subprocess.Popen([sys.executable, str(ROOT / "run_benchmark.py"), "report", str(run_dir)], cwd=ROOT,
                            env=environment(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            preexec_fn=default_sigint)
    try:
        deadline = time.monotonic() + 120
        while not any(written_since(path, started) for path in run_dir.glob("*/runs.csv")):
            if proc.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"the report ended (status {proc.returncode}) before it could be interrupted")
            time.sleep(0.005)
        os.kill(proc.pid, signum)
        proc.wait(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()  # this test's own report process
            proc.wait(timeout=60)
    return proc


def written_since(path: Path, started_ns: int) -> bool:
    try:
        return path.stat().st_mtime_ns > started_ns
    except FileNotFoundError:  # a staging folder renamed or removed meanwhile
        return False


# (id, signal, the interrupted report's exit status)
SIGNALS = [("sigint", signal.SIGINT, 130), ("sigkill", signal.SIGKILL, -signal.SIGKILL)]


@pytest.mark.slow
def test_interrupted_report_keeps_the_previous_one_whole(tmp_path):
    run_dir = tmp_path / "run"
    for task in TASKS:
        for seed in (0, 1):
            add_run(run_dir, task, "full", seed)
            add_run(run_dir, task, "removed-later", seed)
    render_report(run_dir)
    previous = files(run_dir / "report")
    assert "removed-later" in previous["index.md"].decode()

    for task in TASKS:  # the runs change: one method goes, another comes
        for seed in (0, 1):
            record_path(run_dir, task, "removed-later", seed).unlink()
            add_run(run_dir, task, "sdpa", seed)
    for case, signum, status in SIGNALS:
        proc = interrupt_mid_rendering(run_dir, signum)
        assert proc.returncode == status, (case, proc.stderr)
        assert files(run_dir / "report") == previous, case  # the old report, byte for byte: nothing new beside it

    render_report(run_dir)  # the next report: whole, and nothing of the removed runs or the killed rendering
    index = (run_dir / "report" / "index.md").read_text()
    assert "removed-later" not in index and "sdpa" in index
    assert not any("removed-later" in text.decode(errors="replace") for text in files(run_dir / "report").values())
    assert sorted(p.name for p in run_dir.iterdir()) == ["records", "report"]  # no staging folder left


def dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


# (id, leftover folders by kind, whether report/ exists, what remains afterwards)
LEFTOVERS = [
    ("dead-staging-removed", {"partial": "dead"}, True, ["report"]),
    ("live-staging-kept", {"partial": "live"}, True, [".report.{live}.partial", "report"]),
    ("aside-restored-when-no-report", {"old": "dead"}, False, ["report"]),
    ("aside-removed-beside-a-report", {"old": "dead"}, True, ["report"]),
]


@pytest.mark.parametrize("leftovers, has_report, remaining", [c[1:] for c in LEFTOVERS], ids=[c[0] for c in LEFTOVERS])
def test_abandoned_renderings_are_cleaned_up(tmp_path, leftovers, has_report, remaining):
    pids = {"dead": dead_pid(), "live": os.getppid()}
    if has_report:
        (tmp_path / "report").mkdir()
        (tmp_path / "report" / "index.md").write_text("current\n")
    for kind, who in leftovers.items():
        folder = tmp_path / f".report.{pids[who]}.{kind}"
        folder.mkdir()
        (folder / "index.md").write_text(f"{kind}\n")
    remove_abandoned_renderings(tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == [name.format(**pids) for name in remaining]
    expected = "current\n" if has_report else "old\n"
    assert (tmp_path / "report" / "index.md").read_text() == expected
