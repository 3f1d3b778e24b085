"""Treeformer attention (Madaan et al., ICLR 2023): DGT routing trees with TF- and TC-Attention.

Importing the package registers two cores (options, defaults first):

- `treeformer-tf`: `height` 5, `empty_leaf` "ancestor" | "zero", `bucket_capacity` null | int,
  `overparam_layers` 0. Exact leaf-restricted softmax attention; bucketed when capped.
- `treeformer-tc`: `height` 5, `aggregate` "mean" | "sum", `overparam_layers` 0, `implementation`
  "auto" | "all-nodes" | "path". Attention over the node aggregates of each query's root-to-leaf
  path; dense gradients.
- both: `ste` "dgt" | "scaled" (the straight-through estimator at the sign), `and_bias` false |
  true (DGT's learnable per-leaf AND bias).

Rule for `height`: 1 <= height <= 10 and 2^height <= max_seq_len. Both cores keep their tree as
`tree.weight` (H, 2^h - 1, d) and `tree.bias` (H, 2^h - 1), so a TC -> TF switch keeps it;
`RoutingTree.grown()` grows a trained tree by one level, output-preserving for TF and TC
(harness/training/bootstrap.py uses it); `RoutingTree.grow_()` does it in place, keeping the Parameters.
"""

from methods.treeformer import tc, tf  # noqa: F401  (registration)
from methods.treeformer.core import TreeAttention
from methods.treeformer.tree import Routing, RoutingTree

__all__ = ["Routing", "RoutingTree", "TreeAttention"]
