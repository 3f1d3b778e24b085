"""Baselines against references: `full`, the peer packages, and their own options.

The contract tests (test_attention_contract.py) cover shapes, padding and gradients of the default
options; these check that each method computes what its paper defines.
"""

import gc
import subprocess
import sys
import weakref

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from bench_common import BenchError
from harness.training.model import EncoderClassifier, ModelConfig
from methods import create_attention
from methods.xformers_attention import padding_bias

HEADS, HEAD_DIM, SEQ_LEN = 4, 16, 64
# Exact methods against their references: float64, where float32 noise would depend on the CPU.
EXACT = dict(atol=1e-10, rtol=1e-10)


def qkv(batch: int = 2, n: int = SEQ_LEN, seed: int = 0, scale: float = 1.0, dtype: torch.dtype = torch.float32):
    generator = torch.Generator().manual_seed(seed)
    q, k, v = torch.randn(3, batch, HEADS, n, HEAD_DIM, generator=generator, dtype=dtype).unbind(0)
    return q * scale, k * scale, v


def padding_mask(batch: int = 2, n: int = SEQ_LEN) -> torch.Tensor:
    mask = torch.ones(batch, n, dtype=torch.bool)
    mask[0, n // 3 :] = False
    return mask


def linformer(**options):
    return create_attention("linformer", num_heads=HEADS, head_dim=HEAD_DIM, max_seq_len=SEQ_LEN, **options)


def performer(seed: int = 0, **options):
    torch.manual_seed(seed)
    return create_attention("performer", num_heads=HEADS, head_dim=HEAD_DIM, max_seq_len=SEQ_LEN, **options)


FULL = create_attention("full", num_heads=HEADS, head_dim=HEAD_DIM, max_seq_len=SEQ_LEN)


# ---- Linformer -------------------------------------------------------------------------------


@pytest.mark.parametrize("sharing", ["none", "headwise", "key-value", "layer"])
def test_linformer_with_identity_projections_equals_full(sharing):
    method = linformer(k=SEQ_LEN, sharing=sharing, init="identity").double()
    q, k, v = qkv(dtype=torch.float64)
    torch.testing.assert_close(method(q, k, v), FULL(q, k, v), **EXACT)


def test_linformer_identity_needs_k_equal_to_length():
    with pytest.raises(BenchError, match="init='identity' needs k == max_seq_len, got k=16, max_seq_len=64"):
        linformer(k=16, init="identity")


def test_linformer_k_is_capped_at_the_sequence_length():
    assert linformer().k == SEQ_LEN  # default 256 > 64
    assert linformer(k=16).k == 16


def test_linformer_shorter_sequence_equals_zero_padding_to_max_length():
    torch.manual_seed(0)
    method = linformer(k=16).double()
    q, k, v = qkv(n=SEQ_LEN, dtype=torch.float64)
    short = 40
    k_zeroed, v_zeroed = k.clone(), v.clone()
    k_zeroed[:, :, short:] = 0
    v_zeroed[:, :, short:] = 0
    padded_out = method(q, k_zeroed, v_zeroed)[:, :, :short]
    torch.testing.assert_close(method(q[:, :, :short], k[:, :, :short], v[:, :, :short]), padded_out, **EXACT)


@pytest.mark.parametrize(
    "sharing, per_core",
    [("none", 2 * HEADS), ("headwise", 2), ("key-value", 1)],
)
def test_linformer_sharing_parameter_counts(sharing, per_core):
    method = linformer(k=16, sharing=sharing)
    assert sum(p.numel() for p in method.parameters()) == per_core * 16 * SEQ_LEN


def test_linformer_layer_sharing_is_one_projection_for_the_whole_model():
    def model(sharing):
        config = ModelConfig(max_seq_len=SEQ_LEN, num_layers=3, attention="linformer",
                             attention_options={"k": 16, "sharing": sharing}, pooling="mean")
        return EncoderClassifier(config)

    def core_parameter_count(m):
        unique = {id(p): p for core in m.attention_cores() for p in core.parameters()}
        return sum(p.numel() for p in unique.values())

    per_layer = model("key-value")
    assert core_parameter_count(per_layer) == 3 * 16 * SEQ_LEN
    shared = model("layer")
    assert core_parameter_count(shared) == 16 * SEQ_LEN
    cores = shared.attention_cores()
    assert all(core.proj_k is cores[0].proj_k and core.proj_v is cores[0].proj_k for core in cores)
    # Every layer's gradient reaches the one projection.
    shared(torch.randint(1, 200, (2, SEQ_LEN))).sum().backward()
    assert cores[0].proj_k.grad is not None and cores[0].proj_k.grad.abs().sum() > 0

    # The table holds weak references: once a model is gone, the next one starts afresh.
    old = weakref.ref(cores[0].proj_k)
    del shared, cores
    gc.collect()
    assert old() is None
    assert core_parameter_count(model("layer")) == 16 * SEQ_LEN


@pytest.mark.parametrize("sharing", ["headwise", "key-value"])
def test_linformer_agrees_with_peer_package(sharing):
    from linformer import LinformerSelfAttention

    torch.manual_seed(0)
    dim, batch = HEADS * HEAD_DIM, 2
    peer = LinformerSelfAttention(dim, seq_len=SEQ_LEN, k=16, heads=HEADS, share_kv=sharing == "key-value").double()
    ours = linformer(k=16, sharing=sharing).double()
    with torch.no_grad():  # the peer stores E^T as (n, k), one per layer shared by heads
        peer.proj_k.copy_(ours.proj_k[0].T)
        if sharing == "headwise":
            peer.proj_v.copy_(ours.proj_v[0].T)
    x = torch.randn(batch, SEQ_LEN, dim, dtype=torch.float64)

    def split_heads(t):
        return t.view(batch, SEQ_LEN, HEADS, HEAD_DIM).transpose(1, 2)  # (B, H, n, d)

    # With share_kv the peer uses its key projection for values too.
    values = peer.to_k(x) if sharing == "key-value" else peer.to_v(x)
    out = ours(split_heads(peer.to_q(x)), split_heads(peer.to_k(x)), split_heads(values))
    out = peer.to_out(out.transpose(1, 2).reshape(batch, SEQ_LEN, dim))
    torch.testing.assert_close(out, peer(x), **EXACT)


# ---- Performer -------------------------------------------------------------------------------


def test_performer_error_falls_as_features_grow():
    # Small-norm q, k keep the softmax kernel's estimator variance moderate (|q|^2 ~ 4).
    def mean_error(num_features):
        errors = []
        for seed in range(5):
            q, k, v = qkv(batch=1, seed=100 + seed, scale=0.5)
            reference = FULL(q, k, v)
            estimate = performer(seed, num_features=num_features).eval()(q, k, v)
            errors.append(((estimate - reference).norm() / reference.norm()).item())
        return sum(errors) / len(errors)

    errors = [mean_error(m) for m in (16, 64, 256)]
    assert errors[0] > errors[1] > errors[2], errors
    assert errors[2] < 0.5 * errors[0], errors  # ~1/sqrt(m): 16x features, about 4x less error


@pytest.mark.filterwarnings("ignore:distutils Version classes:DeprecationWarning")  # the peer's own
@pytest.mark.parametrize("kernel", ["softmax", "relu"])
def test_performer_agrees_with_peer_package(kernel):
    from performer_pytorch import FastAttention

    ours = performer(num_features=32, kernel=kernel).double().eval()
    peer = FastAttention(dim_heads=HEAD_DIM, nb_features=32, generalized_attention=kernel == "relu").double()
    peer.projection_matrix.copy_(ours.features)
    q, k, v = qkv(dtype=torch.float64)
    torch.testing.assert_close(ours(q, k, v), peer(q, k, v), **EXACT)


def test_performer_features_are_orthogonal_in_blocks():
    features = performer(num_features=40).features  # blocks of 16, 16, 8 rows
    directions = features / features.norm(dim=1, keepdim=True)
    for start, stop in ((0, 16), (16, 32), (32, 40)):
        block = directions[start:stop]
        torch.testing.assert_close(block @ block.T, torch.eye(stop - start), atol=1e-5, rtol=0)


def test_performer_redraws_every_interval_in_train_mode_only():
    method = performer(redraw_interval=3).train()
    q, k, v = qkv(batch=1)
    changed = []
    for _ in range(7):
        before = method.features.clone()
        method(q, k, v)
        changed.append(not torch.equal(before, method.features))
    # Each draw serves exactly 3 forwards: redraws happen at the 4th and 7th.
    assert changed == [False, False, False, True, False, False, True]

    method.eval()
    before = method.features.clone()
    for _ in range(7):
        method(q, k, v)
    assert torch.equal(before, method.features)

    never = performer(redraw_interval=0).train()
    before = never.features.clone()
    for _ in range(5):
        never(q, k, v)
    assert torch.equal(before, never.features)


@pytest.mark.parametrize("kernel", ["softmax", "relu"])
def test_performer_padding_keeps_gradients_finite_and_outputs_fixed(kernel):
    method = performer(kernel=kernel).train()
    mask = padding_mask()
    q, k, v = qkv()
    out = method(q, k, v, key_padding_mask=mask)
    padded = ~mask[:, None, :, None].expand_as(k)  # (B, H, n, d)
    huge_k = k.masked_fill(padded, 300.0).requires_grad_(True)  # would overflow exp() if it got there
    huge_v = v.masked_fill(padded, 300.0)
    out_huge = method(q, huge_k, huge_v, key_padding_mask=mask)
    real = mask[:, None, :, None].expand_as(out)
    assert torch.isfinite(out_huge).all()
    torch.testing.assert_close(out[real], out_huge[real], atol=1e-5, rtol=1e-4)
    out_huge.sum().backward()
    assert torch.isfinite(huge_k.grad).all()
    assert huge_k.grad[padded].abs().sum() == 0


def test_performer_example_with_no_real_key_gives_zeros_and_finite_gradients():
    mask = torch.zeros(1, SEQ_LEN, dtype=torch.bool)
    q, k, v = (t.requires_grad_(True) for t in qkv(batch=1))
    out = performer()(q, k, v, key_padding_mask=mask)
    assert torch.equal(out, torch.zeros_like(out))
    out.sum().backward()
    assert all(torch.isfinite(t.grad).all() for t in (q, k, v))


# ---- MAC formulas against what executes --------------------------------------------------------


@pytest.mark.parametrize(
    "name, options, elementwise_macs",
    [
        # elementwise_macs: softmax / exp elements, which FlopCounterMode does not count.
        ("linformer", {"k": 16}, lambda n: HEADS * n * 16),
        ("performer", {"num_features": 32}, lambda n: HEADS * 2 * n * 32),
        ("performer", {"num_features": 32, "kernel": "relu"}, lambda n: 0),
    ],
)
@pytest.mark.parametrize("n", [32, SEQ_LEN])
def test_macs_match_the_matmuls_that_execute(name, options, elementwise_macs, n):
    method = create_attention(name, num_heads=HEADS, head_dim=HEAD_DIM, max_seq_len=SEQ_LEN, **options).eval()
    q, k, v = qkv(batch=1, n=n)
    with FlopCounterMode(display=False) as counter:
        method(q, k, v)
    # FlopCounterMode counts 2 FLOPs per multiply-add.
    assert counter.get_total_flops() // 2 == method.macs(n) - elementwise_macs(n)


# ---- xformers ----------------------------------------------------------------------------------


def test_listing_methods_does_not_import_xformers():
    code = "import sys, methods; methods.list_attentions(); print('xformers' in sys.modules)"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "False"


def test_xformers_without_the_package_says_how_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "xformers", None)  # makes `import xformers...` fail
    monkeypatch.setitem(sys.modules, "xformers.ops", None)
    method = create_attention("xformers", num_heads=HEADS, head_dim=HEAD_DIM, max_seq_len=SEQ_LEN)
    with pytest.raises(BenchError, match=r"install the gpu extra: pip install 'treeformer-bench\[gpu\]'"):
        method(*qkv())


def test_xformers_is_declared_cuda_only():
    method = create_attention("xformers", num_heads=HEADS, head_dim=HEAD_DIM, max_seq_len=SEQ_LEN)
    assert "needs a CUDA device" in method.unsupported_reason(SEQ_LEN, "cpu", has_padding=True)
    assert method.unsupported_reason(SEQ_LEN, "cuda", has_padding=True) is None


def test_xformers_padding_bias_is_aligned_and_masks_padded_keys():
    mask = padding_mask(n=13)
    bias = padding_bias(mask, HEADS, torch.float32)
    assert bias.shape == (2, HEADS, 13, 13)
    assert bias.stride(-1) == 1 and all(s % 8 == 0 for s in bias.stride()[:-1])
    expected = torch.where(mask, 0.0, torch.finfo(torch.float32).min)[:, None, None, :].expand_as(bias)
    assert torch.equal(bias, expected)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_xformers_equals_full_on_cuda():
    pytest.importorskip("xformers")
    method = create_attention("xformers", num_heads=HEADS, head_dim=HEAD_DIM, max_seq_len=SEQ_LEN)
    q, k, v = (t.cuda() for t in qkv())
    mask = padding_mask().cuda()
    torch.testing.assert_close(method(q, k, v, mask), FULL(q, k, v, mask), atol=1e-4, rtol=1e-4)
