"""The attention-core plugin interface.

An attention *core* maps projected q, k, v to the attended values; the Q/K/V and output
projections belong to the model, so every method is compared on the same projections and a
method can be swapped mid-training (the Treeformer bootstrap) while keeping them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar, Optional

import torch
import torch.nn.functional as F
from torch import nn

from bench_common import BenchError


@dataclass(frozen=True)
class Capabilities:
    """What a method can do, declared so the harness skips impossible runs and records why."""

    key_padding_mask: bool = True  # honours key_padding_mask (padded keys get no weight)
    fixed_length: bool = False  # needs seq_len <= max_seq_len fixed at construction (Linformer)
    cuda_only: bool = False  # has no CPU kernels (xformers)
    # drops attention weights in training at the model's `attention_dropout` rate; a core without
    # it ignores the rate, and the run record says so
    attention_dropout: bool = False
    # its tensor shapes follow the data (TF's leaf sizes): traced by torch.compile it would recompile
    # at every step, so under `train.compile=on` it runs eagerly inside the compiled model
    data_dependent_shapes: bool = False


@dataclass(frozen=True)
class CostOption:
    """The option that sets a method's attention cost, declared so cost matching needs no harness edit.

    The cost must grow with the option's value (bisection relies on it). Values run from `minimum`
    to `maximum_per_token` times the sequence length (Linformer's k: at most n).
    """

    name: str
    minimum: int = 1
    maximum_per_token: float = 1.0

    def maximum(self, seq_len: int) -> int:
        """Largest value worth trying at this length."""
        return max(self.minimum, int(self.maximum_per_token * seq_len))


class AttentionMethod(nn.Module):
    """Base class of every attention core.

    Subclasses implement `forward(q, k, v, key_padding_mask=None)` with q, k, v of shape
    (batch, heads, n, head_dim) and key_padding_mask (batch, n) bool, True = real token, returning
    (batch, heads, n, head_dim); and `macs(seq_len)`, the multiply-accumulates one forward pass of
    the core executes for one example (all heads). `create_attention` passes num_heads, head_dim
    and max_seq_len and sets them on the instance, so a plugin may call `super().__init__()` bare.

    Attention dropout: a core declaring `Capabilities(attention_dropout=True)` gets the model's
    rate set as `self.attention_dropout` and applies `self.drop_attention(weights)` to its
    normalised attention weights (active in training only).
    """

    capabilities: ClassVar[Capabilities] = Capabilities()
    # the option that sets this method's cost, for matching at equal MACs; None: its cost is fixed
    cost_option: ClassVar[Optional[CostOption]] = None
    registry_name: ClassVar[str] = ""  # set by register_attention

    def __init__(self, num_heads: int = 0, head_dim: int = 0, max_seq_len: int = 0):
        super().__init__()
        self.num_heads = num_heads
        self.head_dim = head_dim
        self.max_seq_len = max_seq_len
        self.attention_dropout = 0.0

    def drop_attention(self, weights: torch.Tensor) -> torch.Tensor:
        """Dropout on normalised attention weights, in training, at `self.attention_dropout`."""
        rate = getattr(self, "attention_dropout", 0.0)
        return F.dropout(weights, rate, training=True) if rate and self.training else weights

    def macs(self, seq_len: int) -> int:
        """Multiply-accumulates this implementation executes in one forward pass, one example.

        The pass is the one run in evaluation, without gradients: work that only serves the
        backward (skipped there) is not counted, and a data-dependent cost is stated for the case
        the method's docstring names (e.g. a balanced tree).
        Counted as the harness's fvcore handles count (harness/measure/flops.py), so the two agree:
        matmul/bmm/einsum/linear: one MAC per multiply-add; softmax, log_softmax and exp: one per
        element; scatter_add/index_add/cumsum: one per element added; scaled_dot_product_attention:
        2*nq*nk*d matmul MACs plus nq*nk softmax MACs per (batch, head); data movement and
        comparisons (gather, index_select, sort, masked_fill, where, plain elementwise add/mul):
        zero.
        """
        raise NotImplementedError(f"{type(self).__name__} must implement macs(seq_len)")

    def algorithmic_macs(self, seq_len: int) -> int:
        """MACs the algorithm needs; differs from `macs` when the fast path does extra work."""
        return self.macs(seq_len)

    def last_forward_macs(self) -> Optional[tuple[torch.Tensor, torch.Tensor]]:
        """(executed, algorithmic) MACs of each example of the last forward call, as that example
        would cost in a batch of its own: two (B,) float64 tensors, for a method whose cost depends
        on the data (a learned tree); None for one whose cost is `macs(n)` and `algorithmic_macs(n)`
        whatever the input. Per example and batch-free because a tree's padded work depends on its
        batch mates' leaves; the harness counts a test split in batches from this, instead of
        tracing every example."""
        return None

    def diagnostics(self) -> dict:
        """Method-specific measurements of the forward calls since `reset_diagnostics` (e.g. tree
        leaf occupancy); reading them changes nothing."""
        return {}

    def reset_diagnostics(self) -> None:
        """Starts a new window for `diagnostics` (the harness calls it before the test evaluation)."""

    def unsupported_reason(self, seq_len: int, device: str, has_padding: bool) -> Optional[str]:
        """Why this method cannot run this setting, or None when it can."""
        return unsupported_reason(type(self), seq_len, self.max_seq_len, device, has_padding)


def unsupported_reason(
    cls: type[AttentionMethod], seq_len: int, max_seq_len: int, device: str, has_padding: bool
) -> Optional[str]:
    """Checks declared capabilities against a setting, before any module is built."""
    caps = cls.capabilities
    name = cls.registry_name or cls.__name__
    if caps.cuda_only and not str(device).startswith("cuda"):
        return f"{name} needs a CUDA device (has no CPU kernels); got device '{device}'"
    if caps.fixed_length and max_seq_len and seq_len > max_seq_len:
        return f"{name} needs a fixed length: sequence length {seq_len} exceeds max_seq_len {max_seq_len}"
    if has_padding and not caps.key_padding_mask:
        return f"{name} does not support key-padding masks, and this task pads its sequences"
    return None


def check_qkv(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, key_padding_mask) -> None:
    """Validates core inputs once, with a message naming the offending tensor."""
    if q.dim() != 4 or k.shape != q.shape or v.shape[:3] != q.shape[:3]:
        raise BenchError(
            f"attention expects q, k, v of shape (batch, heads, n, head_dim); "
            f"got q {tuple(q.shape)}, k {tuple(k.shape)}, v {tuple(v.shape)}"
        )
    if key_padding_mask is not None and (
        key_padding_mask.dtype != torch.bool or key_padding_mask.shape != (q.shape[0], q.shape[2])
    ):
        raise BenchError(
            f"key_padding_mask must be bool of shape (batch, n) = {(q.shape[0], q.shape[2])}, "
            f"got {key_padding_mask.dtype} {tuple(key_padding_mask.shape)}"
        )
