"""harness/measure/env.git_commit: '-dirty' means code changed, not the results a sweep writes."""

import subprocess

from harness.measure import env


def git(cwd, *args):
    subprocess.run(["git", *args], cwd=cwd, check=True, capture_output=True)


def test_changed_results_leave_the_commit_clean_and_changed_code_marks_it_dirty(tmp_path, monkeypatch):
    (tmp_path / "results").mkdir()
    (tmp_path / "harness").mkdir()
    (tmp_path / "results" / "record.json").write_text("{}\n")
    (tmp_path / "harness" / "code.py").write_text("x = 1\n")
    git(tmp_path, "init", "-q")
    git(tmp_path, "add", ".")
    git(tmp_path, "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "init")
    monkeypatch.setattr(env, "REPO_ROOT", tmp_path / "harness")  # as installed: a folder below the top
    commit = env.git_commit.__wrapped__
    (tmp_path / "results" / "record.json").write_text('{"changed": true}\n')
    assert not commit().endswith("-dirty")
    (tmp_path / "harness" / "code.py").write_text("x = 2\n")
    assert commit().endswith("-dirty")
