"""Third-party methods: a --plugin file, a --plugin module and an installed entry point.

Each is found by `run_benchmark.py list` (a subprocess, as a user runs it); the file plugin is also
loaded in-process, meets the attention contract and trains inside the encoder.
"""

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

from harness.training.model import EncoderClassifier, ModelConfig
from methods import create_attention, list_attentions, load_plugin

REPO = Path(__file__).resolve().parents[1]

# A small sliding-window attention with one learned parameter (its temperature).
WINDOW_PLUGIN = textwrap.dedent(
    '''
    """A sliding-window attention plugin written by a third party."""
    import math

    import torch
    from torch import nn

    from methods import AttentionMethod, register_attention


    @register_attention("{name}")
    class LocalWindow(AttentionMethod):
        """Each query attends to the keys within `window` positions of it."""

        def __init__(self, num_heads, head_dim, max_seq_len, window: int = 4):
            super().__init__()
            self.window = window
            self.log_temperature = nn.Parameter(torch.zeros(()))

        def forward(self, q, k, v, key_padding_mask=None):
            n = q.shape[2]
            scores = q @ k.transpose(-1, -2) / math.sqrt(q.shape[-1]) * self.log_temperature.exp()
            position = torch.arange(n, device=q.device)
            allowed = (position[:, None] - position[None, :]).abs() <= self.window  # (n, n)
            if key_padding_mask is not None:
                allowed = allowed & key_padding_mask[:, None, None, :]  # (B, 1, n, n)
            scores = scores.masked_fill(~allowed, torch.finfo(scores.dtype).min)
            return torch.softmax(scores, dim=-1) @ v

        def macs(self, seq_len):
            return self.num_heads * (2 * seq_len * seq_len * self.head_dim + seq_len * seq_len)
    '''
)


def run_cli(*args: str, pythonpath: Path | None = None) -> subprocess.CompletedProcess:
    env = dict(os.environ)
    if pythonpath is not None:
        env["PYTHONPATH"] = os.pathsep.join(p for p in (str(pythonpath), env.get("PYTHONPATH")) if p)
    return subprocess.run(
        [sys.executable, "run_benchmark.py", *args], cwd=REPO, env=env, capture_output=True, text=True
    )


def write_plugin(directory: Path, module: str, method_name: str) -> Path:
    path = directory / f"{module}.py"
    path.write_text(WINDOW_PLUGIN.format(name=method_name))
    return path


def listed_methods(stdout: str) -> list[str]:
    """Method names of `list` output: lines indented two spaces under 'attention methods:'."""
    return [line.split()[0] for line in stdout.splitlines() if line.startswith("  ") and line.strip()
            and not line.strip().startswith(("options:", "needs:"))]


def test_plugin_file_is_listed_by_the_cli(tmp_path):
    path = write_plugin(tmp_path, "my_window", "my-window")
    result = run_cli("list", "--plugin", str(path))
    assert result.returncode == 0, result.stderr
    assert "my-window" in listed_methods(result.stdout)
    assert "options: window=4" in result.stdout
    assert "my-window" not in listed_methods(run_cli("list").stdout)  # only when asked for


def test_plugin_module_name_is_listed_by_the_cli(tmp_path):
    write_plugin(tmp_path, "module_window", "module-window")
    result = run_cli("list", "--plugin", "module_window", pythonpath=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "module-window" in listed_methods(result.stdout)


def test_entry_point_plugin_is_discovered_without_flags(tmp_path):
    write_plugin(tmp_path, "fake_plugin_window", "entry-window")
    dist_info = tmp_path / "fake_plugin-0.0.dist-info"
    dist_info.mkdir()
    (dist_info / "METADATA").write_text("Metadata-Version: 2.1\nName: fake-plugin\nVersion: 0.0\n")
    (dist_info / "entry_points.txt").write_text("[treeformer_bench.attention]\nentry-window = fake_plugin_window\n")
    result = run_cli("list", pythonpath=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "entry-window" in listed_methods(result.stdout)


def test_plugin_that_raises_on_import_is_a_one_line_error(tmp_path):
    path = tmp_path / "broken_plugin.py"
    path.write_text('"""A plugin with a bug."""\nimport math\nraise RuntimeError("boom at import")\n')
    result = run_cli("list", "--plugin", str(path))
    assert result.returncode == 2
    assert result.stdout == ""
    assert result.stderr.strip().splitlines() == [
        f"error: --plugin {path}:3: raised RuntimeError on import: boom at import"
    ]


@pytest.mark.parametrize("name, message", [
    ("absent.py", "no such file; expected a .py file or a module name"),
    ("", "is a directory; expected a .py file or a module name"),
])
def test_missing_plugin_file_or_a_directory_is_a_one_line_error(tmp_path, name, message):
    target = tmp_path / name if name else tmp_path
    result = run_cli("list", "--plugin", str(target))
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [f"error: --plugin {target}: {message}"]


def test_plugin_loaded_in_process_meets_the_contract_and_trains(tmp_path, restore_attention_registry):
    load_plugin(str(write_plugin(tmp_path, "inproc_window", "inproc-window")))
    assert "inproc-window" in list_attentions()

    torch.manual_seed(0)
    method = create_attention("inproc-window", num_heads=2, head_dim=8, max_seq_len=32, window=3)
    q, k, v = (torch.randn(2, 2, 32, 8).requires_grad_(True) for _ in range(3))
    mask = torch.ones(2, 32, dtype=torch.bool)
    mask[1, 20:] = False
    out = method(q, k, v, key_padding_mask=mask)
    assert out.shape == (2, 2, 32, 8) and torch.isfinite(out).all()
    (out * torch.randn_like(out)).sum().backward()
    for tensor in (q, k, v, method.log_temperature):
        assert tensor.grad is not None and tensor.grad.abs().sum() > 0
    with torch.no_grad():  # padded keys and values do not reach real positions
        k2, v2 = k.clone(), v.clone()
        k2[1, :, 20:], v2[1, :, 20:] = 50.0, 50.0
        torch.testing.assert_close(method(q, k2, v2, mask)[mask[:, None, :, None].expand_as(out)],
                                   out[mask[:, None, :, None].expand_as(out)])

    # Trained inside the encoder: loss falls on a fixed batch.
    config = ModelConfig(vocab_size=16, max_seq_len=16, emb_dim=32, qkv_dim=32, mlp_dim=32, num_layers=1,
                         dropout=0.0, attention="inproc-window", attention_options={"window": 3})
    model = EncoderClassifier(config)
    tokens = torch.randint(1, 16, (8, 16))
    labels = (tokens[:, 0] > 8).long()
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    losses = []
    for _ in range(20):
        loss = torch.nn.functional.cross_entropy(model(tokens), labels)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < 0.5 * losses[0], losses
