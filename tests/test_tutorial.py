"""The plugin tutorial (docs/adding_a_method.md) works as written: both loading paths, training, report."""

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch

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
