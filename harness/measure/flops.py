"""MAC counting with fvcore, under the one convention every method's `macs()` follows.

fvcore counts one multiply-add as one "flop"; we call that unit what it is, a MAC. Its default
handles cover linear layers and matmuls but count zero for softmax, exp, SDPA and the scatter
family (our attention cores live on those), so we register handles for them, following
`methods.base.AttentionMethod.macs`:

- matmul / bmm / mm / baddbmm / einsum / linear: one MAC per multiply-add;
- softmax, log_softmax, exp: one per output element;
- scatter_add, scatter_reduce(sum/mean/prod), index_add, index_put(accumulate=True), cumsum: one
  per element added;
- scaled_dot_product_attention: (d_qk + d_v) * nq * nk matmul MACs plus nq * nk softmax MACs per
  (batch, head), i.e. 2*nq*nk*d + nq*nk when d_qk = d_v = d;
- data movement, comparisons, plain elementwise arithmetic, reductions and integer index
  bookkeeping (gather, index_select, sort, topk, masked_fill, where, add, mul, sum, mean,
  bincount, shifts, ...): zero, registered explicitly so they are not reported as unsupported.

Any other operator stays "unsupported" and is reported beside the totals, so a new method with an
uncounted operator shows up instead of being silently counted as free. layer_norm keeps fvcore's
default (5 per element); it lies outside the attention layer.
"""

from __future__ import annotations

import math
import re
import string
from dataclasses import dataclass
from typing import Any, Callable, Iterable, Optional

import numpy as np
import torch
from torch import nn

from harness.training.batches import eval_batches, one_example
from harness.training.model import AttentionLayer, EncoderClassifier

Handle = Callable[[list, list], int]


def _shape(value: Any) -> Optional[list[int]]:
    """Static shape of a traced value, None when it is not a tensor of known shape."""
    return value.type().sizes() if value.isCompleteTensor() else None


def _numel(value: Any) -> int:
    shape = _shape(value)
    return math.prod(shape) if shape is not None else 0


def _constant(value: Any) -> Any:
    """The Python value of a traced constant argument (e.g. a dim, a flag), None otherwise."""
    try:
        return value.toIValue()
    except RuntimeError:
        return None


def _broadcast_batch(*shapes: Iterable[int]) -> int:
    return math.prod(torch.broadcast_shapes(*(tuple(s) for s in shapes)))


# -- counted operators ---------------------------------------------------------------------------


def matmul_macs(inputs: list, outputs: list) -> int:
    """torch.matmul with broadcasting: batch * n * k * m (fvcore's own handle ignores broadcast)."""
    a, b = _shape(inputs[0]), _shape(inputs[1])
    if len(a) == 1 and len(b) == 1:
        return a[0]
    a2 = [1] + a if len(a) == 1 else a  # a vector acts as a (1, k) matrix
    b2 = b + [1] if len(b) == 1 else b  # and as a (k, 1) matrix on the right
    batch = _broadcast_batch(a2[:-2], b2[:-2])
    return batch * a2[-2] * a2[-1] * b2[-1]


def baddbmm_macs(inputs: list, outputs: list) -> int:
    """baddbmm(input, batch1, batch2): batch * n * k * m; the added input is free."""
    b1, b2 = _shape(inputs[1]), _shape(inputs[2])
    return b1[0] * b1[1] * b1[2] * b2[2]


def einsum_macs(inputs: list, outputs: list) -> int:
    """einsum: for two operands, the product of every index size (one MAC per multiply-add).

    More operands are costed pairwise along numpy's optimal contraction path.
    """
    equation = _constant(inputs[0]).replace(" ", "")
    shapes = [_shape(v) for v in inputs[1].node().inputs()]
    lhs = equation.partition("->")[0]
    terms = _expand_ellipsis(lhs.split(","), shapes)
    sizes: dict[str, int] = {}
    for term, shape in zip(terms, shapes):
        sizes.update(zip(term, shape))
    if len(terms) <= 2:
        return math.prod(sizes.values()) if len(terms) == 2 else 0
    import numpy as np

    operands = [np.broadcast_to(np.zeros(()), s) for s in shapes]  # shapes only, no memory
    _, steps = np.einsum_path(",".join(terms), *operands, optimize="optimal")
    flops = float(re.search(r"Optimized FLOP count:\s*([0-9.e+]+)", steps).group(1))
    return int(flops // 2)  # numpy counts a multiply and an add separately


def _expand_ellipsis(terms: list[str], shapes: list[list[int]]) -> list[str]:
    """Replaces '...' by fresh letters; broadcasting aligns from the right, so a term whose
    ellipsis covers k dims takes the last k of them."""
    spare = [c for c in string.ascii_letters if not any(c in t for t in terms)]
    covered = [len(s) - len(t.replace("...", "")) for t, s in zip(terms, shapes)]
    fill = "".join(spare[: max(covered, default=0)])
    return [t.replace("...", fill[len(fill) - k :]) for t, k in zip(terms, covered)]


def sdpa_macs(inputs: list, outputs: list) -> int:
    """scaled_dot_product_attention: per (batch, head), nq*nk*(d_qk + d_v) + nq*nk softmax."""
    q, k, v = (_shape(x) for x in inputs[:3])
    batch = _broadcast_batch(q[:-2], k[:-2])
    nq, nk = q[-2], k[-2]
    return batch * (nq * nk * (q[-1] + v[-1]) + nq * nk)


def per_output_element(inputs: list, outputs: list) -> int:
    """softmax, log_softmax, exp: one per element."""
    return _numel(outputs[0])


def per_source_element(source_index: int) -> Handle:
    """scatter_add(self, dim, index, src) / index_add(self, dim, index, source): one per added element."""

    def handle(inputs: list, outputs: list) -> int:
        return _numel(inputs[source_index])

    return handle


def cumsum_macs(inputs: list, outputs: list) -> int:
    return _numel(inputs[0])


def scatter_reduce_macs(inputs: list, outputs: list) -> int:
    """scatter_reduce(self, dim, index, src, reduce, include_self): arithmetic reduces count."""
    reduce = _constant(inputs[4])
    return _numel(inputs[3]) if reduce in ("sum", "mean", "prod") else 0


def index_put_macs(inputs: list, outputs: list) -> int:
    """index_put(self, indices, values, accumulate): counts only when it accumulates."""
    return _numel(inputs[2]) if _constant(inputs[3]) else 0


def zero(inputs: list, outputs: list) -> int:
    return 0


COUNTED_OPS: dict[str, Handle] = {
    "aten::matmul": matmul_macs,
    "aten::mm": matmul_macs,
    "aten::baddbmm": baddbmm_macs,
    "aten::einsum": einsum_macs,
    "aten::scaled_dot_product_attention": sdpa_macs,
    "aten::softmax": per_output_element,
    "aten::_softmax": per_output_element,
    "aten::log_softmax": per_output_element,
    "aten::_log_softmax": per_output_element,
    "aten::exp": per_output_element,
    "aten::exp_": per_output_element,
    "aten::scatter_add": per_source_element(3),
    "aten::scatter_add_": per_source_element(3),
    "aten::index_add": per_source_element(3),
    "aten::index_add_": per_source_element(3),
    "aten::scatter_reduce": scatter_reduce_macs,
    "aten::scatter_reduce_": scatter_reduce_macs,
    "aten::index_put": index_put_macs,
    "aten::index_put_": index_put_macs,
    "aten::_index_put_impl_": index_put_macs,
    "aten::cumsum": cumsum_macs,
    "aten::cumsum_": cumsum_macs,
}

# Free by the convention: data movement, comparisons, elementwise arithmetic, reductions, random.
ZERO_COST_OPS: tuple[str, ...] = tuple(
    f"aten::{name}"
    for name in """
    gather index_select take_along_dim sort argsort topk kthvalue masked_fill masked_fill_
    masked_select masked_scatter where scatter scatter_ index_copy index_copy_ one_hot embedding
    argmax argmin max min amax amin maximum minimum clamp_min clamp_max hardtanh hardtanh_
    add add_ sub sub_ rsub mul mul_ div div_ neg abs abs_ sign sign_ sgn pow sqrt rsqrt reciprocal square
    relu gelu tanh sigmoid
    lt le gt ge eq ne logical_and logical_or logical_not logical_xor bitwise_and bitwise_or
    bitwise_xor bitwise_not __or__ __xor__ isfinite isnan
    sum mean any all count_nonzero
    repeat repeat_interleave expand_as view_as flip tril triu diagonal movedim swapaxes
    numpy_T mT mH adjoint matrix_H t_ isinf
    bincount log2 ceil __lshift__ __rshift__ bitwise_left_shift bitwise_right_shift
    ones_like empty_like new_ones fill_ zero_ clone alias lift_fresh scalar_tensor numel
    rand rand_like randn randn_like randint normal_ uniform_ bernoulli bernoulli_
    """.split()
)


def all_handles() -> dict[str, Handle]:
    handles: dict[str, Handle] = {op: zero for op in ZERO_COST_OPS}
    handles.update(COUNTED_OPS)
    return handles


# -- analysis ------------------------------------------------------------------------------------


def analyze(module: nn.Module, inputs: torch.Tensor | tuple[torch.Tensor, ...]):
    """An fvcore FlopCountAnalysis of `module(*inputs)` with our handles, traced now.

    Tracing now (fvcore is lazy) keeps it inside the caller's no_grad/eval context. Unsupported
    operators are read from `.unsupported_ops()`, not logged as warnings.
    """
    from fvcore.nn import FlopCountAnalysis

    analysis = FlopCountAnalysis(module, inputs).set_op_handle(**all_handles())
    analysis.unsupported_ops_warnings(False).uncalled_modules_warnings(False)
    analysis.total()
    return analysis


def count_macs(model: EncoderClassifier, inputs: torch.Tensor) -> dict:
    """Per-example forward MACs of `model` on `inputs` (a batch, normally of one example).

    Attention-core MACs sum fvcore's count over the model's attention cores; attention-layer MACs
    add their Q/K/V and output projections. Algorithmic MACs are what the algorithm needed on
    this input: a data-dependent core (a learned tree) reports its own for each call
    (`last_forward_macs`), the others `algorithmic_macs(n)` at the length they see (the dual head
    runs each core twice). `attention_balanced_macs` is the sum of `algorithmic_macs(n)`, the
    balanced-tree formula, when some core is data-dependent, else None.
    Counted in eval mode, so dropout and training-only paths are left out.
    """
    return _count(model, inputs).totals


@dataclass
class _Count:
    """count_macs' totals (per example) and what counting a whole split needs besides."""

    totals: dict
    data_independent_core_macs: int  # fvcore's count over the cores whose cost ignores the data
    data_dependent: bool  # some core reported its own counts


@dataclass
class _CoreCall:
    core: nn.Module
    seq_len: int
    batch: int
    reported: Optional[tuple[torch.Tensor, torch.Tensor]]  # last_forward_macs() after the call, per example


def _count(model: EncoderClassifier, inputs: torch.Tensor) -> _Count:
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            calls = _core_calls(model, inputs)
            analysis = analyze(model, inputs)
            by_module = analysis.by_module()
    finally:
        model.train(was_training)
    names = {module: name for name, module in model.named_modules()}
    dependent = {id(call.core) for call in calls if call.reported is not None}
    layers = [name for name, module in model.named_modules() if isinstance(module, AttentionLayer)]
    batch = inputs.shape[0]
    core_macs = sum(by_module[names[core]] for core in model.attention_cores())
    independent = sum(by_module[names[core]] for core in model.attention_cores() if id(core) not in dependent)
    algorithmic, balanced = _algorithmic(calls, batch)
    totals = {
        "unit": "MACs",
        "attention_core_macs": core_macs // batch,
        "attention_algorithmic_macs": algorithmic / batch if dependent else int(algorithmic) // batch,
        "attention_balanced_macs": balanced // batch if dependent else None,
        "attention_layer_macs": sum(by_module[name] for name in layers) // batch,
        "total_macs": by_module[""] // batch,
        "unsupported_ops": dict(sorted(analysis.unsupported_ops().items())),
    }
    return _Count(totals, independent // batch, bool(dependent))


def _core_calls(model: EncoderClassifier, inputs: torch.Tensor) -> list[_CoreCall]:
    """Every attention-core call of one forward pass, with what each core reported after it."""
    calls: list[_CoreCall] = []

    def record(core, args, kwargs, output):
        q = args[0] if args else kwargs["q"]  # (B, H, n, d)
        calls.append(_CoreCall(core, q.shape[2], q.shape[0], core.last_forward_macs()))

    hooks = [core.register_forward_hook(record, with_kwargs=True) for core in model.attention_cores()]
    try:
        model(inputs)
    finally:
        for hook in hooks:
            hook.remove()
    return calls


def _algorithmic(calls: list[_CoreCall], batch: int) -> tuple[float, int]:
    """(algorithmic MACs measured on these `batch` examples, the formula's count) summed over the calls."""
    formula = sum(call.core.algorithmic_macs(call.seq_len) * call.batch for call in calls)
    return float(_per_example(calls, batch)[1].sum()), formula


def _per_example(calls: list[_CoreCall], batch: int,
                 data_independent_core_macs: float = 0.0) -> tuple[torch.Tensor, torch.Tensor]:
    """(executed, algorithmic) core MACs of each of the `batch` examples the calls ran on, (B,)
    float64: what the data-dependent cores reported; for the others `data_independent_core_macs`
    (their fvcore count, the same for every example) and `algorithmic_macs(n)` per call."""
    executed = torch.full((batch,), float(data_independent_core_macs), dtype=torch.float64)
    algorithmic = torch.zeros(batch, dtype=torch.float64)
    for call in calls:
        if call.reported is None:
            algorithmic += call.core.algorithmic_macs(call.seq_len)
        else:
            executed += call.reported[0].cpu()
            algorithmic += call.reported[1].cpu()
    return executed, algorithmic


def count_split_macs(model: EncoderClassifier, split: Any, device: torch.device) -> dict:
    """The record's `flops`: count_macs on the split's first example, with the attention-core and
    algorithmic counts replaced by their mean over every example of the split, plus the core
    count's min and max.

    Data-independent cores cost the same on every example (fvcore's count of the first, so min =
    max = mean). Data-dependent cores report what each example would execute in a batch of its
    own (`last_forward_macs`; a tree's padded work depends on its batch mates' leaves): the split
    costs one evaluation pass in batches rather than one fvcore trace per example. Attention-layer
    and total MACs move by the same difference as the core count (the projections do not depend
    on the data).
    """
    first = _count(model, one_example(split, device))
    flops = dict(first.totals)
    if not first.data_dependent:
        flops["attention_core_macs_min"] = flops["attention_core_macs_max"] = flops["attention_core_macs"]
        return flops
    executed, algorithmic = per_example_core_macs(model, split, device, first.data_independent_core_macs)
    shift = executed.mean() - flops["attention_core_macs"]
    flops.update(
        attention_core_macs=float(executed.mean()),
        attention_core_macs_min=float(executed.min()),
        attention_core_macs_max=float(executed.max()),
        attention_algorithmic_macs=float(algorithmic.mean()),
        attention_layer_macs=float(flops["attention_layer_macs"] + shift),
        total_macs=float(flops["total_macs"] + shift),
    )
    return flops


def per_example_core_macs(
    model: EncoderClassifier, split: Any, device: torch.device, data_independent_core_macs: int = 0,
    batch_size: int = 32,
) -> tuple[np.ndarray, np.ndarray]:
    """(executed, algorithmic) attention-core MACs of each example of `split`, each as it would
    cost in a batch of its own, from forward passes over batches of `batch_size`.

    See `_per_example` for what each core contributes.
    """
    was_training = model.training
    model.eval()
    executed, algorithmic = [], []
    try:
        with torch.no_grad():
            for inputs, _ in eval_batches(split, batch_size, None, device):
                batch_executed, batch_algorithmic = _per_example(_core_calls(model, inputs), len(inputs),
                                                                 data_independent_core_macs)
                executed.append(batch_executed.numpy())
                algorithmic.append(batch_algorithmic.numpy())
    finally:
        model.train(was_training)
    return np.concatenate(executed), np.concatenate(algorithmic)
