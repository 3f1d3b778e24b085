"""The tutorials work as written: docs/adding_a_method.md (both loading paths, training, report) and
docs/adding_a_task.md (a generated task loaded as a plugin, prepared and trained)."""

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from bench_common import BenchError

ROOT = Path(__file__).resolve().parents[1]
TUTORIAL = ROOT / "docs" / "adding_a_method.md"


def tutorial_plugin_source() -> str:
    blocks = re.findall(r"```python\n(.*?)```", TUTORIAL.read_text(), flags=re.S)
    plugin = [block for block in blocks if "@register_attention" in block]
    assert len(plugin) == 1, "the tutorial must contain exactly one plugin code block"
    return plugin[0]


def test_tutorial_plugin_is_short_and_complete():
    source = tutorial_plugin_source()
    assert len(source.strip().splitlines()) < 40
    compile(source, "my_window.py", "exec")


def cli(*args: str, cwd: Path = ROOT, env_extra: dict | None = None) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(ROOT), (env_extra or {}).get("PYTHONPATH")])))
    return subprocess.run([sys.executable, str(ROOT / "run_benchmark.py"), *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=600)


def test_tutorial_plugin_meets_the_contract(tmp_path, restore_attention_registry):
    from methods import create_attention, load_plugin
    from methods.full import FullAttention

    path = tmp_path / "my_window.py"
    path.write_text(tutorial_plugin_source())
    load_plugin(str(path))
    n = 12
    method = create_attention("my-window", num_heads=2, head_dim=8, max_seq_len=n, window=n)
    full = FullAttention(num_heads=2, head_dim=8, max_seq_len=n)
    q, k, v = torch.randn(3, 2, 2, n, 8).unbind(0)
    mask = torch.ones(2, n, dtype=torch.bool)
    mask[1, 8:] = False
    # A window as wide as the sequence is full attention: an independent reference.
    torch.testing.assert_close(method(q, k, v, mask), full(q, k, v, mask))
    narrow = create_attention("my-window", num_heads=2, head_dim=8, max_seq_len=n, window=1)
    out = narrow(q, k, v)
    # Query 0 sees keys 0 and 1 only.
    expected = torch.softmax(q[..., :1, :] @ k[..., :2, :].transpose(-1, -2) / 8**0.5, dim=-1) @ v[..., :2, :]
    torch.testing.assert_close(out[..., :1, :], expected)


@pytest.mark.slow
def test_tutorial_plugin_trains_and_reaches_the_report(tmp_path):
    plugin = tmp_path / "my_window.py"
    plugin.write_text(tutorial_plugin_source())
    listed = cli("list", "--plugin", str(plugin))
    assert listed.returncode == 0, listed.stderr
    assert "my-window" in listed.stdout

    out = tmp_path / "runs"
    run = cli("run", "--suite", "smoke", "--methods", "full,my-window", "--plugin", str(plugin),
              "--out", str(out), "--data-dir", str(tmp_path / "data"), "--device", "cpu")
    assert run.returncode == 0, run.stderr
    report = cli("report", str(out))
    assert report.returncode == 0, report.stderr
    table = (out / "report" / "accuracy.md").read_text()
    assert "my-window" in table and "full" in table


@pytest.mark.slow
def test_tutorial_entry_point_lists_the_method(tmp_path):
    site = tmp_path / "site"
    (site / "my_window_pkg-0.1.dist-info").mkdir(parents=True)
    (site / "my_window.py").write_text(tutorial_plugin_source())
    (site / "my_window_pkg-0.1.dist-info" / "METADATA").write_text("Metadata-Version: 2.1\nName: my-window-pkg\nVersion: 0.1\n")
    (site / "my_window_pkg-0.1.dist-info" / "entry_points.txt").write_text(
        "[treeformer_bench.attention]\nmy-window = my_window\n"
    )
    listed = cli("list", env_extra={"PYTHONPATH": str(site)})
    assert listed.returncode == 0, listed.stderr
    assert "my-window" in listed.stdout


TASK_TUTORIAL = ROOT / "docs" / "adding_a_task.md"


def tutorial_task_source() -> str:
    blocks = re.findall(r"```python\n(.*?)```", TASK_TUTORIAL.read_text(), flags=re.S)
    task = [block for block in blocks if "declare(" in block]
    assert len(task) == 1, "the task tutorial must contain exactly one task code block"
    return task[0]


@pytest.fixture
def tutorial_task(tmp_path):
    from lra import TASKS, get_task
    from methods import load_plugin

    path = tmp_path / "first_token.py"
    path.write_text(tutorial_task_source())
    load_plugin(str(path))
    yield get_task("first-token")
    TASKS.remove("first-token")  # other tests expect exactly the catalog's tasks


def test_tutorial_task_prepares_what_it_promises(tmp_path, tutorial_task):
    splits = tutorial_task.prepare(tmp_path / "data", {"num_examples": 100, "seq_len": 16})
    assert [len(splits[name]) for name in ("train", "val", "test")] == [80, 10, 10]
    for split in splits.values():
        assert split.inputs.shape[1] == 16 and split.inputs.min() >= 1 and split.inputs.max() <= 8
        assert (split.targets == split.inputs[:, 0] - 1).all()  # the label is the first token, as documented
    assert tutorial_task.model_config("lra", {"seq_len": 16})["max_seq_len"] == 16
    with pytest.raises(BenchError, match="task 'first-token': need num_examples >= 30"):
        tutorial_task.prepare(tmp_path / "data", {"num_examples": 10})


@pytest.mark.slow
def test_tutorial_task_trains_as_a_plugin(tmp_path):
    plugin = tmp_path / "first_token.py"
    plugin.write_text(tutorial_task_source())
    result = cli("run", "--suite", "smoke", "--tasks", "first-token", "--methods", "full", "--seeds", "0",
                 "--plugin", str(plugin), "--out", str(tmp_path / "out"), "--data-dir", str(tmp_path / "data"),
                 "--device", "cpu", "--set", "train.steps=10", "--set", "train.eval_every=5",
                 "--set", "data.num_examples=200", "--set", "data.seq_len=32")
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "out" / "records" / "first-token" / "full" / "seed0.json").is_file()
