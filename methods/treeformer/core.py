"""What TF- and TC-Attention share: the routing tree, option checks, routing of q and k, diagnostics.

Both cores hold their tree as `self.tree` with the same parameter names and shapes, so
`EncoderClassifier.set_attention` (which carries state of matching name and shape) keeps the
learned routing when the bootstrap switches a layer from TC to TF.
"""

from __future__ import annotations

import math
from typing import Callable, Optional

import torch

from bench_common import BenchError
from methods.base import AttentionMethod, Capabilities
from methods.treeformer.tree import Routing, RoutingTree, check_height


class TreeAttention(AttentionMethod):
    """Base of the Treeformer cores; subclasses implement `forward`, `macs`, `algorithmic_macs`."""

    capabilities = Capabilities(attention_dropout=True)  # on the softmax weights of TF and TC

    def __init__(
        self,
        num_heads: int = 0,
        head_dim: int = 0,
        max_seq_len: int = 0,
        height: int = 5,
        overparam_layers: int = 0,
        ste: str = "dgt",
        and_bias: bool = False,
    ):
        super().__init__(num_heads, head_dim, max_seq_len)
        # Types are checked by the registry (`validate_attention_options`, from the subclasses'
        # annotations); the ranges the types allow but the tree cannot use are checked here.
        what = f"attention method '{self.registry_name or type(self).__name__}'"
        check_height(height, max_seq_len, what)
        if overparam_layers < 0:
            raise BenchError(f"{what} option 'overparam_layers' must be an integer >= 0, got {overparam_layers!r}")
        self.height = height
        self.tree = RoutingTree(num_heads, head_dim, height, overparam_layers, ste=ste, and_bias=and_bias)
        self._alone_macs: Optional[Callable[[], tuple[torch.Tensor, torch.Tensor]]] = None  # see last_forward_macs
        self.reset_diagnostics()

    @property
    def leaves(self) -> int:
        return 2**self.height

    def route_queries_and_keys(
        self, q: torch.Tensor, k: torch.Tensor, key_padding_mask: Optional[torch.Tensor], walk: bool = False
    ) -> tuple[Routing, Routing]:
        """Routes q and k through the one shared tree (two calls: no concatenated copy to keep)."""
        return self.tree.route(q, key_padding_mask, walk), self.tree.route(k, key_padding_mask, walk)

    def routing_macs(self, seq_len: int, batch: int = 1, walk: bool = False) -> int:
        """Routing MACs executed in evaluation by one forward call on `batch` examples.

        The node product z = x W^T + b for q and k (with the AND bias also the leaf scores), or,
        when the tree `walks`, the h products on each token's path; collapsing the
        over-parameterisation costs once per call (once for q, once for k). The straight-through
        estimator's work runs only when a gradient is wanted, so it is not counted.
        """
        nodes = 2**self.height - 1
        extra = len(self.tree.overparam_weights)
        collapse = 2 * extra * self.num_heads * (nodes * nodes * self.head_dim + nodes * nodes)
        if self.tree.walks(walk):
            return batch * self.num_heads * 2 * seq_len * self.height * self.head_dim + collapse
        # With the AND bias the leaf is the argmax of the leaf scores: signs @ P^T for every token.
        leaf_scores = 2 * seq_len * nodes * self.leaves if self.tree.and_bias is not None else 0
        return batch * self.num_heads * (2 * seq_len * nodes * self.head_dim + leaf_scores) + collapse

    def algorithmic_routing_macs(self, seq_len: int) -> int:
        """A traversal evaluates h hyperplanes per token (q and k)."""
        return self.num_heads * 2 * seq_len * self.height * self.head_dim

    # ---- diagnostics -------------------------------------------------------------------------

    def reset_diagnostics(self) -> None:
        """Empties the counters `diagnostics` averages."""
        self._diag_calls = 0
        self._diag_examples = 0
        self._diag_leaf_counts = torch.zeros(2**self.height, dtype=torch.float64)
        self._diag_max_leaf = 0.0  # sum over (example, head) of the fullest leaf's key count
        self._diag_heads = 0  # number of (example, head) pairs seen
        self._diag_reached = 0.0  # sum over real queries of the fraction of real keys reached
        self._diag_queries = 0
        self._diag_macs = 0.0  # MACs the forward calls executed (what fvcore traces), summed
        self._diag_algorithmic_macs = 0.0  # data-dependent MACs the algorithm needed, summed

    @torch.no_grad()
    def _record(
        self,
        key_counts: torch.Tensor,
        reached: torch.Tensor,
        real_keys: torch.Tensor,
        query_real: torch.Tensor,
        macs_spent: float,
        algorithmic_macs_spent: float,
        alone_macs: Callable[[], tuple[torch.Tensor, torch.Tensor]],
    ) -> None:
        """key_counts (B, H, L); reached (B, H, n) keys each query reaches; real_keys (B,) per example;
        the MACs this call spent on its whole batch; `alone_macs` computes `last_forward_macs` on demand
        (training never asks, so its forwards do not pay for it)."""
        batch, heads, _ = key_counts.shape
        self._diag_calls += 1
        self._diag_examples += batch
        self._diag_leaf_counts += key_counts.sum(dim=(0, 1)).to(torch.float64).cpu()
        self._diag_max_leaf += float(key_counts.amax(dim=-1).sum())
        self._diag_heads += batch * heads
        fraction = reached / real_keys.clamp(min=1).to(reached.dtype)[:, None, None]
        self._diag_reached += float(fraction[query_real].sum())
        self._diag_queries += int(query_real.sum())
        self._diag_macs += float(macs_spent)
        self._diag_algorithmic_macs += float(algorithmic_macs_spent)
        self._alone_macs = alone_macs

    def last_forward_macs(self) -> Optional[tuple[torch.Tensor, torch.Tensor]]:
        """(executed, algorithmic) MACs of each example of the last forward call as if it had run
        alone: two (B,) float64 tensors (see `AttentionMethod.last_forward_macs`)."""
        return None if self._alone_macs is None else self._alone_macs()

    def diagnostics(self) -> dict:
        """Leaf occupancy and spent MACs averaged over the forward calls since `reset_diagnostics`."""
        if self._diag_calls == 0:
            return {"height": self.height, "leaves": self.leaves, "forward_calls": 0}
        counts = self._diag_leaf_counts
        total = float(counts.sum())
        share = counts / total if total > 0 else counts
        nonzero = share[share > 0]
        entropy = float(-(nonzero * torch.log2(nonzero)).sum())
        mean_leaf = total / max(self._diag_heads, 1) / self.leaves
        max_leaf = self._diag_max_leaf / max(self._diag_heads, 1)
        result = {
            "height": self.height,
            "leaves": self.leaves,
            "forward_calls": self._diag_calls,
            "leaf_occupancy": [round(float(x), 6) for x in share],
            "leaf_entropy_bits": entropy,
            "leaf_entropy_normalized": entropy / self.height,
            "max_leaf_occupancy": max_leaf,
            "mean_leaf_occupancy": mean_leaf,
            "leaf_imbalance": max_leaf / mean_leaf if mean_leaf > 0 else 0.0,
            "keys_reached_fraction": self._diag_reached / max(self._diag_queries, 1),
            # Per example: executed (for TF it depends on the leaf sizes) and algorithmically needed.
            "attention_macs_spent": self._diag_macs / max(self._diag_examples, 1),
            "attention_algorithmic_macs_spent": self._diag_algorithmic_macs / max(self._diag_examples, 1),
        }
        return result


def records_diagnostics() -> bool:
    """Whether a forward call feeds `diagnostics` and `last_forward_macs`: only without autograd
    recording, i.e. in evaluation (the harness reads diagnostics after the test evaluation, the FLOP
    and efficiency measurements read executed MACs from forwards without gradient), so training
    steps never pay for it; and not under a FLOP tracer (it would record the tracer's pass) nor
    while torch.compile traces (host syncs would break the graph)."""
    return not (torch.is_grad_enabled() or torch.jit.is_tracing() or torch.compiler.is_compiling())


def inverse_sqrt(dim: int) -> float:
    return 1.0 / math.sqrt(dim)
