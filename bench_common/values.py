"""Checks a plain value (from JSON/YAML/TOML, a CLI flag or Python) against a type annotation.

Shared by the harness's config layers and the attention registry's option check, so a wrong type
is refused with the same one-line message wherever it is given.
"""

from __future__ import annotations

import dataclasses
import json
import types
import typing
from typing import Any, Literal, Union, get_args, get_origin

from bench_common.errors import BenchError
from bench_common.registry import check_option_keys

UNION_TYPES = (Union, types.UnionType)


def check_value(path: str, value: Any, hint: Any) -> Any:
    """`value` (from JSON/YAML/TOML or Python) checked against `hint`; returns the JSON form."""
    origin = get_origin(hint)
    if hint is Any or hint is None:
        return value
    if origin is Literal:
        if value not in get_args(hint):
            raise BenchError(f"{path}: expected one of {', '.join(map(repr, get_args(hint)))}, got {value!r}")
        return value
    if origin in UNION_TYPES:
        args = get_args(hint)
        if value is None:
            if type(None) in args:
                return None
            raise BenchError(f"{path}: must not be null")
        inner = [a for a in args if a is not type(None)]
        return check_value(path, value, inner[0] if len(inner) == 1 else Any)
    if hint is bool:
        if not isinstance(value, bool):
            raise BenchError(f"{path}: expected true or false, got {value!r}")
        return value
    if hint is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise BenchError(f"{path}: expected an integer, got {value!r}")
        return value
    if hint is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise BenchError(f"{path}: expected a number, got {value!r}")
        return float(value)
    if hint is str:
        if not isinstance(value, str):
            raise BenchError(f"{path}: expected a string, got {value!r}")
        return value
    if origin is tuple:
        args = get_args(hint)
        if not isinstance(value, (list, tuple)) or len(value) != len(args):
            raise BenchError(f"{path}: expected a list of {len(args)} values, got {value!r}")
        return [check_value(f"{path}[{i}]", v, a) for i, (v, a) in enumerate(zip(value, args))]
    if origin is list:
        if not isinstance(value, list):
            raise BenchError(f"{path}: expected a list, got {value!r}")
        (item,) = get_args(hint)
        return [check_value(f"{path}[{i}]", v, item) for i, v in enumerate(value)]
    if hint is dict or origin is dict:
        if not isinstance(value, dict):
            raise BenchError(f"{path}: expected a mapping, got {value!r}")
        return json.loads(json.dumps(value))  # a deep, JSON-normalised copy (int keys -> str)
    return value


def check_fields(path: str, cls: type, value: Any) -> dict[str, Any]:
    """A mapping checked against dataclass `cls`: no unknown keys, every field without a default
    present, each value of its field's type. Returns the checked values of the keys given."""
    if not isinstance(value, dict):
        names = ", ".join(f.name for f in dataclasses.fields(cls))
        raise BenchError(f"{path}: expected a mapping with keys {names}, got {value!r}")
    check_option_keys(path, value, [f.name for f in dataclasses.fields(cls)])
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        required = f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
        if required and f.name not in value:
            raise BenchError(f"{path}: missing '{f.name}'")
    return {key: check_value(f"{path}.{key}", item, hints[key]) for key, item in value.items()}
