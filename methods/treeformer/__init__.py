"""Treeformer attention (Madaan et al., ICLR 2023): DGT routing trees with TF- and TC-Attention.

Importing the package registers `treeformer-tf` and `treeformer-tc`.
"""

from methods.treeformer import tc, tf  # noqa: F401  (registration)
from methods.treeformer.core import TreeAttention
from methods.treeformer.tree import RoutingTree, Routing, check_height

__all__ = ["RoutingTree", "Routing", "TreeAttention", "check_height"]
