"""The GPU path: every registered method on CUDA agrees with its CPU reference, in fp32 and bf16.

Marked `gpu` (run by scripts/gpu_check.sh); skipped with the reason where CUDA is missing. The
comparison helpers also run on CPU against themselves (unmarked), so CI exercises them.
"""

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from methods import create_attention, get_attention_class, list_attentions

ROOT = Path(__file__).resolve().parents[1]
BATCH, HEADS, HEAD_DIM, SEQ_LEN = 2, 4, 32, 256
CUDA = torch.cuda.is_available()
needs_cuda = pytest.mark.skipif(not CUDA, reason="no CUDA device (torch.cuda.is_available() is False)")


def build(name: str, device: str) -> torch.nn.Module:
    """The method with seed-0 parameters (and random features/projections), in eval mode.

    Eval mode: a training-mode method may redraw random features from the device's own RNG
    (Performer), which differs between CPU and CUDA; gradients still flow in eval mode.
    """
    torch.manual_seed(0)
    return create_attention(name, num_heads=HEADS, head_dim=HEAD_DIM, max_seq_len=SEQ_LEN).eval().to(device)


def skip_if_not_installed(name: str) -> None:
    """The `xformers` method runs only where its optional package is installed (the gpu extra)."""
    if name == "xformers" and importlib.util.find_spec("xformers") is None:
        pytest.skip("xformers is not installed: pip install 'treeformer-bench[gpu]'")


def reference_name(name: str) -> str:
    """The method whose CPU run is the reference: itself, or `full` for CUDA-only exact kernels."""
    return "full" if get_attention_class(name).capabilities.cuda_only else name


def inputs(name: str, device: str):
    generator = torch.Generator().manual_seed(1)
    q, k, v, weights = torch.randn(4, BATCH, HEADS, SEQ_LEN, HEAD_DIM, generator=generator).unbind(0)
    mask = None
    if get_attention_class(name).capabilities.key_padding_mask:
        mask = torch.ones(BATCH, SEQ_LEN, dtype=torch.bool)
        mask[1, SEQ_LEN * 3 // 4 :] = False  # (B, n): the second example ends in padding
        mask = mask.to(device)
        weights[1, :, SEQ_LEN * 3 // 4 :] = 0  # padded query rows are unspecified: no gradient from them
    qkv = [t.to(device).requires_grad_() for t in (q, k, v)]
    return qkv, mask, weights.to(device)


def forward_backward(name: str, device: str, autocast: bool = False) -> dict[str, torch.Tensor]:
    """Output and q/k/v gradients of `name` on `device`, returned on CPU in fp32."""
    method = build(name, device)
    (q, k, v), mask, weights = inputs(name, device)
    with torch.autocast(device_type=torch.device(device).type, dtype=torch.bfloat16, enabled=autocast):
        out = method(q, k, v, key_padding_mask=mask)
    (out.float() * weights).sum().backward()
    results = {"out": out, "grad_q": q.grad, "grad_k": k.grad, "grad_v": v.grad}
    if mask is not None:  # compare the real query rows only
        real = mask[:, None, :, None].expand_as(out)
        results["out"] = out[real]
    return {key: value.detach().float().cpu() for key, value in results.items()}


@pytest.mark.parametrize("name", ["full", "sdpa"])
def test_comparison_helpers_on_cpu(name):
    """CPU against CPU: the helpers are deterministic and return every tensor compared on CUDA."""
    first, second = forward_backward(name, "cpu"), forward_backward(name, "cpu")
    assert set(first) == {"out", "grad_q", "grad_k", "grad_v"}
    for key in first:
        torch.testing.assert_close(first[key], second[key], atol=0, rtol=0)
    assert first["out"].numel() < BATCH * HEADS * SEQ_LEN * HEAD_DIM  # padded rows were left out


def test_gpu_check_script_refuses_without_cuda():
    if CUDA:
        pytest.skip("this machine has CUDA: the script would run the GPU checks")
    done = subprocess.run(["bash", str(ROOT / "scripts/gpu_check.sh")], cwd=ROOT, capture_output=True,
                          text=True, timeout=120, env={**os.environ, "PYTHON": sys.executable})
    assert done.returncode == 2
    assert done.stderr.strip().splitlines() == [
        "error: scripts/gpu_check.sh needs a CUDA device (torch.cuda.is_available() is False)"
    ]


@pytest.mark.gpu
@needs_cuda
@pytest.mark.parametrize("name", list_attentions())
def test_cuda_fp32_matches_cpu(name):
    """fp32 on CUDA vs fp32 on CPU. Tolerance 1e-4 abs / 1e-3 rel: kernels sum in other orders
    (and the reference of a CUDA-only exact kernel is `full`). TF32 matmuls are off by default in
    torch; a user who turns them on globally would see ~1e-3 errors here."""
    skip_if_not_installed(name)
    expected = forward_backward(reference_name(name), "cpu")
    got = forward_backward(name, "cuda")
    for key in expected:
        torch.testing.assert_close(got[key], expected[key], atol=1e-4, rtol=1e-3, msg=f"{name}: {key}")


@pytest.mark.gpu
@needs_cuda
@pytest.mark.parametrize("name", list_attentions())
def test_cuda_bf16_autocast_is_finite_and_close(name):
    """bf16 autocast (what training on CUDA uses) vs fp32 on CPU: finite everywhere, and a median
    error within bf16's resolution (8 mantissa bits, ~4e-3 relative, grown by the sums). The median,
    not the max: a tree method may route a token whose node score is near 0 to another leaf."""
    skip_if_not_installed(name)
    expected = forward_backward(reference_name(name), "cpu")
    got = forward_backward(name, "cuda", autocast=True)
    for key in expected:
        assert torch.isfinite(got[key]).all(), f"{name}: {key} not finite under bf16 autocast"
        scale = expected[key].abs().median().clamp(min=1e-3)
        error = (got[key] - expected[key]).abs().median()
        assert error <= 3e-2 * scale + 1e-3, f"{name}: {key} median error {error:.3g} (scale {scale:.3g})"


@pytest.mark.gpu
@needs_cuda
def test_sdpa_agrees_across_cuda_backends():
    """The `sdpa` method under each SDPA backend: flash (bf16, no mask), memory-efficient and math."""
    from torch.nn.attention import SDPBackend, sdpa_kernel

    method = build("sdpa", "cuda")
    (q, k, v), mask, _ = inputs("sdpa", "cuda")
    with torch.no_grad():
        for dtype, backend_mask, backends in (
            (torch.bfloat16, None, (SDPBackend.FLASH_ATTENTION, SDPBackend.EFFICIENT_ATTENTION, SDPBackend.MATH)),
            (torch.float32, mask, (SDPBackend.EFFICIENT_ATTENTION, SDPBackend.MATH)),
        ):
            args = [t.to(dtype) for t in (q, k, v)]
            outputs = []
            for backend in backends:
                with sdpa_kernel(backend):
                    outputs.append(method(*args, key_padding_mask=backend_mask).float())
            tolerance = 2e-2 if dtype == torch.bfloat16 else 1e-4
            for backend, out in zip(backends[:-1], outputs[:-1]):
                torch.testing.assert_close(out, outputs[-1], atol=tolerance, rtol=tolerance, msg=str(backend))


@pytest.mark.gpu
@needs_cuda
@pytest.mark.parametrize("name", list_attentions())
def test_encoder_trains_a_step_on_cuda_under_bf16(name):
    """One optimiser step of the benchmark's encoder with `name` on CUDA, as the loop runs it (its
    `autocast` at CUDA's default precision, bf16; the routing runs in fp32 inside)."""
    from harness.training.loop import autocast
    from harness.training.model import EncoderClassifier, ModelConfig

    skip_if_not_installed(name)
    torch.manual_seed(0)
    config = ModelConfig(vocab_size=50, num_classes=3, max_seq_len=SEQ_LEN, emb_dim=64, qkv_dim=64, mlp_dim=128,
                         num_layers=2, num_heads=2, attention=name)
    model = EncoderClassifier(config).cuda()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    tokens = torch.randint(1, 50, (4, SEQ_LEN), device="cuda")
    if get_attention_class(name).capabilities.key_padding_mask:
        tokens[0, -16:] = 0  # padding (id 0) in one example
    labels = torch.randint(0, 3, (4,), device="cuda")
    before = [p.detach().clone() for p in model.parameters()]
    with autocast(torch.device("cuda")):
        assert torch.is_autocast_enabled("cuda")
        loss = F.cross_entropy(model(tokens), labels)
    loss.backward()
    optimizer.step()
    assert torch.isfinite(loss)
    assert any(not torch.equal(b, p) for b, p in zip(before, model.parameters()))
