"""The contract every registered attention method meets, ours and any plugin's, for free.

Parametrized over the registry: a method is tested the day it is registered.
"""

import pytest
import torch

from methods import create_attention, get_attention_class, list_attentions

BATCH, HEADS, HEAD_DIM, SEQ_LEN = 2, 2, 16, 64
# Invariances of exact computations are checked in float64: float32 noise depends on the CPU.
EXACT = dict(atol=1e-10, rtol=1e-10)


def runnable_methods() -> list:
    params = []
    for name in list_attentions():
        reason = get_attention_class(name).capabilities.cuda_only and "needs CUDA"
        params.append(pytest.param(name, marks=pytest.mark.skip(reason=f"{name} {reason}")) if reason else name)
    return params


def build(name: str, seed: int = 0):
    torch.manual_seed(seed)
    return create_attention(name, num_heads=HEADS, head_dim=HEAD_DIM, max_seq_len=SEQ_LEN).eval()


def random_qkv(seed: int = 1, requires_grad: bool = False, dtype: torch.dtype = torch.float32):
    generator = torch.Generator().manual_seed(seed)
    tensors = torch.randn(3, BATCH, HEADS, SEQ_LEN, HEAD_DIM, generator=generator, dtype=dtype).unbind(0)
    return [t.clone().requires_grad_(requires_grad) for t in tensors]


def padding_mask() -> torch.Tensor:
    mask = torch.ones(BATCH, SEQ_LEN, dtype=torch.bool)
    mask[1, SEQ_LEN // 2 :] = False  # second example: the last half is padding
    return mask


@pytest.mark.parametrize("name", runnable_methods())
def test_shape_and_finite(name):
    out = build(name)(*random_qkv())
    assert out.shape == (BATCH, HEADS, SEQ_LEN, HEAD_DIM)
    assert torch.isfinite(out).all()


@pytest.mark.parametrize("name", runnable_methods())
def test_gradients_reach_every_parameter_and_input(name):
    method = build(name).train()
    q, k, v = random_qkv(requires_grad=True)
    # A random projection of the output, so no gradient cancels by symmetry (as a plain sum can).
    weights = torch.randn(BATCH, HEADS, SEQ_LEN, HEAD_DIM, generator=torch.Generator().manual_seed(3))
    (method(q, k, v) * weights).sum().backward()
    for tensor_name, tensor in (("q", q), ("k", k), ("v", v)):
        assert tensor.grad is not None and tensor.grad.abs().sum() > 0, f"no gradient reaches {tensor_name}"
    for param_name, param in method.named_parameters():
        if param.requires_grad:
            assert param.grad is not None and param.grad.abs().sum() > 0, f"no gradient reaches {param_name}"


@pytest.mark.parametrize("name", runnable_methods())
def test_padded_keys_do_not_change_real_outputs(name):
    if not get_attention_class(name).capabilities.key_padding_mask:
        pytest.skip(f"{name} declares no key-padding support")
    method = build(name).double()
    mask = padding_mask()
    q, k, v = random_qkv(dtype=torch.float64)
    out = method(q, k, v, key_padding_mask=mask)
    k2, v2 = k.clone(), v.clone()
    k2[1, :, SEQ_LEN // 2 :] = 100 * torch.randn_like(k2[1, :, SEQ_LEN // 2 :])
    v2[1, :, SEQ_LEN // 2 :] = 100 * torch.randn_like(v2[1, :, SEQ_LEN // 2 :])
    out2 = method(q, k2, v2, key_padding_mask=mask)
    real = mask[:, None, :, None].expand_as(out)
    torch.testing.assert_close(out[real], out2[real], **EXACT)


@pytest.mark.parametrize("name", runnable_methods())
def test_deterministic_under_fixed_seed(name):
    q, k, v = random_qkv()
    torch.testing.assert_close(build(name, seed=7)(q, k, v), build(name, seed=7)(q, k, v), atol=0, rtol=0)


@pytest.mark.parametrize("name", runnable_methods())
def test_batch_elements_are_independent(name):
    method = build(name).double()
    q, k, v = random_qkv(dtype=torch.float64)
    together = method(q, k, v)
    for i in range(BATCH):
        alone = method(q[i : i + 1], k[i : i + 1], v[i : i + 1])
        torch.testing.assert_close(together[i : i + 1], alone, **EXACT)


@pytest.mark.parametrize("name", runnable_methods())
def test_macs_is_positive_and_grows_with_length(name):
    method = build(name)
    assert 0 < method.macs(SEQ_LEN // 2) < method.macs(SEQ_LEN)
    assert method.algorithmic_macs(SEQ_LEN) > 0
