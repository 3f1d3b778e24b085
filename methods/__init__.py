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

# Built-in methods: every module of this package registers itself with @register_attention when
# imported, so a new method is one new file here and no edit anywhere else.
import importlib as _importlib  # noqa: E402
import pkgutil as _pkgutil  # noqa: E402

_MACHINERY = {"base", "plugins", "registry"}
for _module in sorted(_pkgutil.iter_modules(__path__), key=lambda m: m.name):
    if _module.name not in _MACHINERY and not _module.name.startswith("_"):
        _importlib.import_module(f"{__name__}.{_module.name}")

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
