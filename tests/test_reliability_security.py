"""Security: checkpoints can never run code when loaded, and plugin code runs only when named.

Plugin code runs only when the user names it: with --plugin (a module name or a .py file), or by
installing a package that declares the `treeformer_bench.attention` entry-point group. Nothing is
discovered by file or module name; workers import only the --plugin list of the sweep that started
them, and loading results or checkpoints imports nothing.
"""

import pickle
import sys

import pytest
import torch

from bench_common import BenchError
from harness.training.checkpoints import load_checkpoint, save_checkpoint
from harness.cli import main


def test_checkpoint_holding_a_code_executing_pickle_is_refused(tmp_path):
    marker = tmp_path / "code-ran"

    class Payload:
        def __reduce__(self):
            return (marker.touch, ())  # unpickling this object would create the marker file

    path = tmp_path / "evil.pt"
    torch.save({"step": 3, "model": Payload()}, path)
    with pytest.raises(BenchError, match="unreadable") as caught:
        load_checkpoint(path)
    assert not marker.exists() and str(path) in str(caught.value)

    torch.load(path, weights_only=False)  # the file really is armed: an unsafe load runs it
    assert marker.exists()


@pytest.mark.filterwarnings("ignore:Detected pickle protocol")
def test_plain_pickle_checkpoint_is_refused_without_running_it(tmp_path):
    marker = tmp_path / "code-ran"

    class Payload:
        def __reduce__(self):
            return (marker.touch, ())

    path = tmp_path / "pickled.pt"
    path.write_bytes(pickle.dumps({"step": 1, "x": Payload()}))
    with pytest.raises(BenchError, match="unreadable"):
        load_checkpoint(path)
    assert not marker.exists()


def test_saved_training_state_loads_under_weights_only(tmp_path):
    # Everything the loop saves (RNG states included) must load with weights_only=True.
    from harness.training.checkpoints import rng_state

    path = tmp_path / "state.pt"
    state = {"key": "k", "step": 7, "model": {"w": torch.ones(2)}, "rng": rng_state(), "history": [{"step": 5}]}
    save_checkpoint(path, state)
    loaded = load_checkpoint(path)
    assert loaded["step"] == 7 and torch.equal(loaded["model"]["w"], torch.ones(2))
    assert torch.equal(loaded["rng"]["torch"], state["rng"]["torch"])




MARKED_PLUGIN = """
from pathlib import Path

from methods import register_attention
from methods.full import FullAttention

Path(__file__).with_name("imported.marker").touch()


@register_attention("marked-full")
class MarkedFull(FullAttention):
    \"\"\"Full attention whose import leaves a marker file (security tests).\"\"\"
"""


@pytest.fixture
def plugin_module(tmp_path, monkeypatch, restore_attention_registry):
    """A plugin module importable by name (on sys.path) and sitting in the working directory."""
    (tmp_path / "relia_marked_plugin.py").write_text(MARKED_PLUGIN)
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.chdir(tmp_path)
    yield tmp_path / "imported.marker"
    for name in [n for n in sys.modules if "relia_marked_plugin" in n]:
        del sys.modules[name]


def test_plugin_code_does_not_run_unless_named(plugin_module, capsys):
    assert main(["list"]) == 0
    assert "marked-full" not in capsys.readouterr().out
    assert not plugin_module.exists() and "relia_marked_plugin" not in sys.modules


@pytest.mark.parametrize("spec", ["relia_marked_plugin", "relia_marked_plugin.py"])
def test_plugin_code_runs_when_named(plugin_module, capsys, spec):
    assert main(["list", "--plugin", spec]) == 0
    assert "marked-full" in capsys.readouterr().out and plugin_module.exists()
