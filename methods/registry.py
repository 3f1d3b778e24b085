"""The attention-method registry: register, look up, validate options, build."""

from __future__ import annotations

import typing
from typing import Any, Callable

from bench_common import BenchError, Registry, check_option_keys
from bench_common.registry import constructor_options
from bench_common.values import check_value
from methods.base import AttentionMethod

ATTENTION = Registry("attention method", AttentionMethod)

# Arguments every core receives from the model; everything else in __init__ is an option.
SHAPE_ARGS = ("num_heads", "head_dim", "max_seq_len")


def register_attention(name: str) -> Callable[[type[AttentionMethod]], type[AttentionMethod]]:
    """Class decorator: `@register_attention("my-window")` over an `AttentionMethod` subclass."""

    def decorator(cls: type[AttentionMethod]) -> type[AttentionMethod]:
        ATTENTION.add(name, cls)
        cls.registry_name = name
        return cls

    return decorator


def get_attention_class(name: str) -> type[AttentionMethod]:
    from methods.plugins import load_entry_point_plugins

    load_entry_point_plugins()
    return ATTENTION.get(name)


def list_attentions() -> list[str]:
    """Names of all registered methods: built-ins, entry-point plugins and loaded --plugin files."""
    from methods.plugins import load_entry_point_plugins

    load_entry_point_plugins()
    return ATTENTION.names()


def attention_options(name: str) -> dict[str, Any]:
    """The options `name` accepts with their defaults (documentation and the `list` command)."""
    params = constructor_options(get_attention_class(name), SHAPE_ARGS)
    return {k: (None if p.default is p.empty else p.default) for k, p in params.items()}


def validate_attention_options(name: str, options: dict[str, Any]) -> dict[str, Any]:
    """Checks option names and simple types against the constructor; returns coerced options."""
    cls = get_attention_class(name)
    params = constructor_options(cls, SHAPE_ARGS)
    check_option_keys(f"attention method '{name}'", options, params)
    hints = typing.get_type_hints(cls.__init__)
    return {k: check_value(f"attention method '{name}' option '{k}'", v, hints.get(k)) for k, v in options.items()}


def create_attention(
    name: str, *, num_heads: int, head_dim: int, max_seq_len: int, attention_dropout: float = 0.0, **options: Any
) -> AttentionMethod:
    """Builds the registered method `name` with validated options.

    `attention_dropout` reaches only cores that declare `Capabilities(attention_dropout=True)`;
    others ignore it (`applies_attention_dropout` says which).
    """
    for arg, value in (("num_heads", num_heads), ("head_dim", head_dim), ("max_seq_len", max_seq_len)):
        if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
            raise BenchError(f"create_attention('{name}'): {arg} must be a positive integer, got {value!r}")
    if isinstance(attention_dropout, bool) or not isinstance(attention_dropout, (int, float)) or not 0 <= attention_dropout < 1:
        raise BenchError(f"create_attention('{name}'): attention_dropout must be a number in [0, 1), got {attention_dropout!r}")
    options = validate_attention_options(name, options)
    cls = get_attention_class(name)
    method = cls(num_heads=num_heads, head_dim=head_dim, max_seq_len=max_seq_len, **options)
    method.num_heads, method.head_dim, method.max_seq_len = num_heads, head_dim, max_seq_len
    method.attention_dropout = float(attention_dropout) if applies_attention_dropout(name) else 0.0
    return method


def applies_attention_dropout(name: str) -> bool:
    """Whether method `name` drops attention weights (its declared capability)."""
    return get_attention_class(name).capabilities.attention_dropout
