"""Bad input gets one line naming the thing and what is accepted; the CLI exits 2 without a traceback."""

import subprocess
import sys
from pathlib import Path

import pytest
import torch

from bench_common import BenchError
from harness.training.model import EncoderClassifier, ModelConfig
from methods import create_attention, get_attention_class

REPO = Path(__file__).resolve().parents[1]


def run_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "run_benchmark.py", *args], cwd=REPO, capture_output=True, text=True)


@pytest.mark.parametrize(
    "args, expected",
    [
        (["frobnicate"], "invalid choice: 'frobnicate'"),
        (["list", "--bogus"], "list: unknown flag --bogus; its flags: --plugin, --debug"),
    ],
)
def test_cli_bad_input_is_one_line_and_exit_2(args, expected):
    result = run_cli(*args)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and expected in lines[0], result.stderr
    assert "Traceback" not in result.stderr


def test_cli_list_shows_the_baselines():
    result = run_cli("list")
    assert result.returncode == 0, result.stderr
    for name in ("full", "sdpa", "linformer", "performer", "xformers"):
        assert f"  {name} " in result.stdout


def test_unknown_method_names_close_matches():
    with pytest.raises(BenchError, match=r"unknown attention method 'linformr'; did you mean 'linformer'.*available: full, "):
        create_attention("linformr", num_heads=2, head_dim=8, max_seq_len=16)


def test_unknown_and_invalid_options_name_what_is_accepted():
    with pytest.raises(BenchError, match=r"unknown option 'sharng' \(did you mean 'sharing'\?\); accepted: init, k, sharing"):
        create_attention("linformer", num_heads=2, head_dim=8, max_seq_len=16, sharng="layer")
    with pytest.raises(BenchError, match=r"option 'sharing': expected one of 'none', 'headwise', 'key-value', 'layer'"):
        create_attention("linformer", num_heads=2, head_dim=8, max_seq_len=16, sharing="heads")
    with pytest.raises(BenchError, match=r"option 'kernel': expected one of 'softmax', 'relu'"):
        create_attention("performer", num_heads=2, head_dim=8, max_seq_len=16, kernel="gelu")
    with pytest.raises(BenchError, match="num_features must be a positive integer, got 0"):
        create_attention("performer", num_heads=2, head_dim=8, max_seq_len=16, num_features=0)


def test_heads_not_dividing_the_model_dim_names_both_fields():
    with pytest.raises(BenchError, match=r"model\.num_heads=4 must divide model\.qkv_dim=10"):
        ModelConfig(qkv_dim=10, num_heads=4)


def test_fixed_length_method_given_a_longer_sequence():
    cls = get_attention_class("linformer")
    method = create_attention("linformer", num_heads=2, head_dim=8, max_seq_len=64, k=16)
    reason = method.unsupported_reason(128, "cpu", has_padding=True)
    assert reason == "linformer needs a fixed length: sequence length 128 exceeds max_seq_len 64"
    assert method.unsupported_reason(64, "cpu", has_padding=True) is None
    assert cls.capabilities.fixed_length
    q = k = v = torch.randn(1, 2, 128, 8)
    with pytest.raises(BenchError, match="linformer needs a fixed length: sequence length 128 exceeds max_seq_len 64"):
        method(q, k, v)


def test_model_rejects_inputs_longer_than_its_length():
    model = EncoderClassifier(ModelConfig(max_seq_len=32, attention="linformer", attention_options={"k": 8}))
    with pytest.raises(BenchError, match=r"input length 40 exceeds model\.max_seq_len=32"):
        model(torch.randint(1, 200, (1, 40)))
