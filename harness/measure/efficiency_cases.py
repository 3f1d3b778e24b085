"""The timed calls of an efficiency sweep: one method at one (length, scope, pass), built and ready.

Scope "core" calls the attention core alone; "layer" calls Q/K/V projections + core + output
projection (`harness.training.model.AttentionLayer`). Pass "forward" is inference (no autograd),
"forward_backward" a training step's forward and backward. Tree methods (Treeformer TF/TC) are
timed twice, labelled by `tree`: "random" (the tree as initialised) and "balanced" (hyperplanes
through the medians of the keys, queries equal to the keys, so every leaf holds n / 2^h of each;
harness/measure/balanced_tree.py).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Optional

import torch

from harness.measure.balanced_tree import balance_through_medians
from harness.measure.efficiency_options import DTYPES, EfficiencyOptions, TimedMethod
from harness.training.model import AttentionLayer, ModelConfig, check_core_output
from methods import AttentionMethod, create_attention, get_attention_class
from methods.treeformer.core import TreeAttention

TREES = ("random", "balanced")  # the two trees a tree method is timed with


@dataclass(frozen=True)
class Entry:
    """One row label of a group: a method, and for a tree method the tree it is timed with."""

    method: TimedMethod
    tree: Optional[str] = None

    @property
    def label(self) -> str:
        return f"{self.method.label}[{self.tree}]" if self.tree else self.method.label


def entries_of(methods: list[TimedMethod]) -> list[Entry]:
    """The timed entries: each method once, a tree method once per tree."""
    return [Entry(m, tree) for m in methods for tree in (TREES if is_tree_method(m.attention) else (None,))]


def is_tree_method(attention: str) -> bool:
    return issubclass(get_attention_class(attention), TreeAttention)


@dataclass
class Case:
    """One entry at one (length, scope, pass), built and ready to call."""

    run: Callable[[], None]
    forward: Callable[[], None]  # the timed input's forward without gradient
    core: torch.nn.Module
    seq_len: int
    projection_macs: int  # Q, K, V and output projections (layer scope), else 0

    def macs(self) -> float:
        """Forward MACs the timed input executes, one example.

        A data-dependent core reports what its last forward without gradient executed (the same as
        in a training forward: the estimator's extra work is backward-only, and training forwards
        record nothing); the others cost `macs(n)`.
        """
        self.forward()
        reported = self.core.last_forward_macs()
        return self.projection_macs + (float(reported[0].sum()) if reported is not None else self.core.macs(self.seq_len))


def build_case(entry: Entry, seq_len: int, scope: str, pass_: str, opts: EfficiencyOptions, device: str) -> Case:
    """The timed call; a "balanced" tree is first balanced on these inputs."""
    torch.manual_seed(0)
    heads, head_dim, width = opts.num_heads, opts.head_dim, opts.num_heads * opts.head_dim
    dtype = DTYPES[opts.dtype]
    method = entry.method
    core = create_attention(method.attention, num_heads=heads, head_dim=head_dim, max_seq_len=seq_len,
                            **method.options)
    if scope == "core":
        module: torch.nn.Module = CheckedCore(core)
        inputs: tuple = tuple(torch.randn(3, 1, heads, seq_len, head_dim, device=device, dtype=dtype).unbind(0))
        out_shape = (1, heads, seq_len, head_dim)
        projections = 0
    else:
        config = ModelConfig(emb_dim=width, qkv_dim=width, num_heads=heads, max_seq_len=seq_len,
                             attention=method.attention)
        module = AttentionLayer(config, core)
        inputs = (torch.randn(1, seq_len, width, device=device, dtype=dtype), None)  # (x, key_padding_mask)
        out_shape = (1, seq_len, width)
        projections = 4 * seq_len * width * width  # Q, K, V and output projections
    module = module.to(device=device, dtype=dtype)
    if entry.tree == "balanced":
        inputs = _balance(module, core, scope, inputs)

    def forward() -> None:
        with torch.no_grad():
            module(*inputs)

    if pass_ == "forward":
        module.eval()
        return Case(forward, forward, core, seq_len, projections)

    module.train()
    leaves = [t.requires_grad_() for t in inputs if t is not None] + list(module.parameters())
    grad_out = torch.randn(out_shape, device=device, dtype=dtype)

    def run() -> None:
        for leaf in leaves:
            leaf.grad = None
        module(*inputs).backward(grad_out)

    return Case(run, forward, core, seq_len, projections)


class CheckedCore(torch.nn.Module):
    """The core called alone, its first output checked as the model checks it (a transposed or
    wrongly sized plugin output is an error row, never a timed "ok")."""

    def __init__(self, core: AttentionMethod):
        super().__init__()
        self.core = core
        self.checked = False

    def forward(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        out = self.core(q, k, v)
        if not self.checked:
            check_core_output(self.core, out, v)
            self.checked = True
        return out


@torch.no_grad()
def _balance(module: torch.nn.Module, core: TreeAttention, scope: str, inputs: tuple) -> tuple:
    """Queries equal to keys (core: k = q; layer: the key projection copies the query one), and
    the tree's hyperplanes through their medians: every leaf gets n / 2^h queries and keys."""
    if scope == "core":
        q, _, v = inputs
        inputs = (q, q.clone(), v)
        keys = q
    else:
        qkv = module.qkv.weight  # rows: queries, keys, values
        width = qkv.shape[0] // 3
        qkv[width : 2 * width] = qkv[:width]
        seen: list[torch.Tensor] = []
        hook = core.register_forward_pre_hook(lambda _, args: seen.append(args[1]))  # args: q, k, v
        module.eval()(*inputs)
        hook.remove()
        keys = seen[0]
    balance_through_medians(core.tree, keys)
    return inputs
