"""Attention-core plugins and their registry.

    from methods import AttentionMethod, register_attention, create_attention, list_attentions

Importing this package registers the built-in methods; third-party ones arrive through the
`treeformer_bench.attention` entry-point group or `--plugin`. Heavy optional dependencies
(xformers, triton) are imported only when a method that needs them runs.
"""

from methods.base import AttentionMethod, Capabilities, CostOption
from methods.plugins import load_plugin
from methods.registry import (
    ATTENTION,
    attention_options,
    create_attention,
    get_attention_class,
    list_attentions,
    register_attention,
)

# Built-in methods: each module registers itself with @register_attention.
from methods import (  # noqa: E402,F401  (registration)
    bigbird, full, linear, linformer, local, nystromformer, performer, reformer, routing, sdpa, treeformer,
    xformers_attention,
)

__all__ = [
    "ATTENTION",
    "AttentionMethod",
    "Capabilities",
    "CostOption",
    "attention_options",
    "create_attention",
    "get_attention_class",
    "list_attentions",
    "load_plugin",
    "register_attention",
]
