"""Scaffolding shared by the attention methods' tests (tests/test_<method>.py, test_flops.py):
float64 layers and inputs, padding masks, dense attention written out, input gradients, fvcore's
MAC count and the matched sweep's solver.

The dense reference (`dense_attention`) is plain torch and shares no code with methods/; the rest
only builds, runs or counts the implementation under test, so a reference test still fails when
the method is wrong.
"""

from __future__ import annotations

import math
from typing import Callable, Optional

import pytest
import torch
from torch import nn

import methods.treeformer.kernels as kernels
from harness.config import layered as cfg
from harness.measure.flops import analyze
from harness.sweep.matching import solve_option
from methods import AttentionMethod, create_attention

HEADS, HEAD_DIM = 2, 8
NEEDS_KERNELS = pytest.mark.skipif(not kernels.available(), reason="the tree methods' C++ kernels did not build here")


def with_kernels(*values, **param) -> pytest.param:
    """A parameter set that runs the C++ kernels (TC's "fused-path"): skipped where they did not build."""
    return pytest.param(*values, marks=NEEDS_KERNELS, **param)

Attend = Callable[..., torch.Tensor]  # (q, k, v, key_padding_mask=...) -> output, as an attention core


def layer(name: str, n: int, seed: int = 0, **options) -> AttentionMethod:
    """The float64 layer in eval mode; `seed` fixes whatever it draws at construction."""
    torch.manual_seed(seed)
    return create_attention(name, num_heads=HEADS, head_dim=HEAD_DIM, max_seq_len=n, **options).double().eval()


def random(*shape: int, seed: int) -> torch.Tensor:
    """float64 normal values from their own generator, so no test depends on the global RNG."""
    return torch.randn(*shape, dtype=torch.float64, generator=torch.Generator().manual_seed(seed))


def qkv(n: int, batch: int = 2, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """q, k, v of shape (batch, HEADS, n, HEAD_DIM)."""
    return random(3, batch, HEADS, n, HEAD_DIM, seed=seed).unbind(0)


def ragged_mask(n: int, step: int, batch: int = 2) -> torch.Tensor:
    """Example b keeps its first n - step * b tokens: a step off the block size pads mid-block."""
    return torch.arange(n)[None, :] < torch.tensor([n - step * b for b in range(batch)])[:, None]


def real_rows(mask: Optional[torch.Tensor], out: torch.Tensor) -> torch.Tensor:
    """Where `out` holds a real query's output (everywhere without a mask): padded queries' outputs
    are left unspecified, so the tests compare only these."""
    if mask is None:
        return torch.ones_like(out, dtype=torch.bool)
    return mask[:, None, :, None].expand_as(out)


def dense_attention(q, k, v, allowed: Optional[torch.Tensor] = None,
                    key_padding_mask: Optional[torch.Tensor] = None) -> torch.Tensor:
    """softmax(q k^T / sqrt(d)) v over the explicit n x n scores; the pairs that `allowed` (broadcast
    to the scores) leaves out, and padded keys, score -inf."""
    scores = q @ k.transpose(-1, -2) / math.sqrt(q.shape[-1])
    if key_padding_mask is not None:
        keys = key_padding_mask[:, None, None, :]
        allowed = keys if allowed is None else allowed & keys
    if allowed is not None:
        scores = scores.masked_fill(~allowed, -math.inf)
    return torch.softmax(scores, dim=-1) @ v


def input_gradients(attend: Attend, n: int, mask: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """Gradients of q, k, v (qkv(n)) through a fixed random weighting of the real queries' outputs."""
    weights = random(mask.shape[0], HEADS, n, HEAD_DIM, seed=5) * mask[:, None, :, None]
    q, k, v = (x.requires_grad_() for x in qkv(n, batch=mask.shape[0]))
    (attend(q, k, v, key_padding_mask=mask) * weights).sum().backward()
    return q.grad, k.grad, v.grad


class CoreOnly(nn.Module):
    """Traces one attention core on its own, so fvcore attributes every operator to `core`."""

    def __init__(self, core: AttentionMethod):
        super().__init__()
        self.core = core

    def forward(self, q, k, v, key_padding_mask=None):
        return self.core(q, k, v, key_padding_mask=key_padding_mask)


def fvcore_macs(method: AttentionMethod, n: int) -> tuple[int, dict]:
    """fvcore's MACs for one float32 forward of `method` (the last 5 of n keys padded), and the
    operators it could not count: (method.macs(n), {}) when the formula holds."""
    method = method.float()
    q, k, v = (x.float() for x in qkv(n, batch=1))
    mask = torch.ones(1, n, dtype=torch.bool)
    mask[0, -5:] = False
    with torch.no_grad():
        analysis = analyze(CoreOnly(method), (q, k, v, mask))
    return analysis.total("core"), dict(analysis.unsupported_ops("core"))


MATCHED_SHAPE = dict(num_heads=2, head_dim=16, max_seq_len=64)  # the attention layer of `solve_matched`'s model


def solve_matched(attention: str, options: dict, target: int) -> tuple:
    """solve_option's (cost option value, MACs) for `attention` with `options` fixed, aiming at
    `target` MACs in a one-layer model whose attention has MATCHED_SHAPE."""
    config = cfg.default_layer("cpu")
    config["task"] = "hand"
    config["model"].update(vocab_size=8, num_classes=2, max_seq_len=64, emb_dim=32, qkv_dim=32, num_heads=2,
                           num_layers=1, attention=attention, attention_options=options)
    return solve_option(config, target)
