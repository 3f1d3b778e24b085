"""The strict registry: duplicates, wrong types, unknown names and unknown options are errors."""

import pytest
import torch

from bench_common import BenchError, Registry
from methods import AttentionMethod, create_attention, list_attentions, register_attention


def test_duplicate_name_is_an_error(restore_attention_registry):
    with pytest.raises(BenchError, match="already registered"):

        @register_attention("full")
        class Again(AttentionMethod):
            pass


def test_wrong_base_class_is_an_error(restore_attention_registry):
    with pytest.raises(BenchError, match="is not a AttentionMethod"):
        register_attention("not-a-method")(torch.nn.Linear)


def test_unknown_name_suggests_and_lists():
    with pytest.raises(BenchError, match=r"unknown attention method 'sdpaa'; did you mean 'sdpa'\?.*available: .*full"):
        create_attention("sdpaa", num_heads=2, head_dim=8, max_seq_len=16)


def test_unknown_option_names_key_and_accepted(restore_attention_registry):
    @register_attention("windowed-test")
    class Windowed(AttentionMethod):
        def __init__(self, num_heads, head_dim, max_seq_len, window: int = 16):
            super().__init__()
            self.window = window

    with pytest.raises(BenchError, match="unknown option 'windw' \\(did you mean 'window'\\?\\); accepted: window"):
        create_attention("windowed-test", num_heads=2, head_dim=8, max_seq_len=16, windw=3)
    with pytest.raises(BenchError, match="option 'window': expected an integer"):
        create_attention("windowed-test", num_heads=2, head_dim=8, max_seq_len=16, window="3")
    method = create_attention("windowed-test", num_heads=2, head_dim=8, max_seq_len=16, window=4)
    assert (method.window, method.num_heads, method.head_dim, method.max_seq_len) == (4, 2, 8, 16)
    assert "windowed-test" in list_attentions()


@pytest.mark.parametrize("name, options, message", [
    ("linformer", {"sharng": "layer"},
     r"^attention method 'linformer': unknown option 'sharng' \(did you mean 'sharing'\?\); accepted: init, k, sharing$"),
    ("linformer", {"sharing": "heads"},
     r"^attention method 'linformer' option 'sharing': expected one of 'none', 'headwise', 'key-value', 'layer', got 'heads'$"),
    ("performer", {"kernel": "gelu"}, r"^attention method 'performer' option 'kernel': expected one of 'softmax', 'relu'"),
    ("performer", {"num_features": 0}, r"^performer option num_features must be a positive integer, got 0$"),
])
def test_the_baselines_name_bad_options_and_what_they_accept(name, options, message):
    with pytest.raises(BenchError, match=message):
        create_attention(name, num_heads=2, head_dim=8, max_seq_len=16, **options)


def test_fixed_length_method_given_a_longer_sequence():
    method = create_attention("linformer", num_heads=2, head_dim=8, max_seq_len=64, k=16)
    assert type(method).capabilities.fixed_length
    reason = method.unsupported_reason(128, "cpu", has_padding=True)
    assert reason == "linformer needs a fixed length: sequence length 128 exceeds max_seq_len 64"
    assert method.unsupported_reason(64, "cpu", has_padding=True) is None
    q = k = v = torch.randn(1, 2, 128, 8)
    with pytest.raises(BenchError, match="linformer needs a fixed length: sequence length 128 exceeds max_seq_len 64"):
        method(q, k, v)


def test_generic_registry_for_other_kinds():
    class Suite:
        pass

    suites = Registry("suite", Suite)
    suites.add("smoke", Suite())
    with pytest.raises(BenchError, match="unknown suite 'smok'; did you mean 'smoke'"):
        suites.get("smok")
    with pytest.raises(BenchError, match="is not a Suite"):
        suites.add("bad", object())
    with pytest.raises(BenchError, match="name must be a non-empty string"):
        suites.add(" ", Suite())


def test_sdpa_equals_full_with_padding():
    generator = torch.Generator().manual_seed(0)
    q, k, v = torch.randn(3, 2, 4, 33, 16, generator=generator).unbind(0)
    mask = torch.ones(2, 33, dtype=torch.bool)
    mask[0, 20:] = False
    full = create_attention("full", num_heads=4, head_dim=16, max_seq_len=33)
    sdpa = create_attention("sdpa", num_heads=4, head_dim=16, max_seq_len=33)
    torch.testing.assert_close(sdpa(q, k, v, mask), full(q, k, v, mask), atol=1e-5, rtol=1e-5)
