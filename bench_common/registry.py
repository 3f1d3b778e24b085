"""A strict name -> class registry, one instance per kind of plugin (methods, tasks, suites).

Strict because silent overwrites cost users hours: a duplicate name is an error, a class of the
wrong base is an error, and a failed lookup suggests close matches and lists what exists.
"""

from __future__ import annotations

import difflib
import inspect
from typing import Any, Callable, Generic, Iterable, TypeVar

from bench_common.errors import BenchError

T = TypeVar("T")


class Registry(Generic[T]):
    """Maps names to entries (classes or instances) of one kind.

    `base` is the class every entry must be (for classes: subclass of; for instances: instance
    of). `kind` names the kind in error messages ("attention method", "task", "suite").
    """

    def __init__(self, kind: str, base: type):
        self.kind = kind
        self.base = base
        self._entries: dict[str, T] = {}

    def register(self, name: str) -> Callable[[T], T]:
        """Decorator form: `@registry.register("name")`."""

        def decorator(entry: T) -> T:
            self.add(name, entry)
            return entry

        return decorator

    def add(self, name: str, entry: T) -> None:
        """Adds `entry` under `name`; duplicates and wrong types are errors, never overwrites."""
        if not isinstance(name, str) or not name.strip() or name != name.strip():
            raise BenchError(f"{self.kind} name must be a non-empty string without spaces, got {name!r}")
        is_right_kind = (
            issubclass(entry, self.base) if isinstance(entry, type) else isinstance(entry, self.base)
        )
        if not is_right_kind:
            raise BenchError(
                f"cannot register {self.kind} '{name}': {entry!r} is not a {self.base.__name__}"
            )
        if name in self._entries:
            raise BenchError(
                f"{self.kind} '{name}' is already registered (by {_describe(self._entries[name])}); "
                f"choose another name"
            )
        self._entries[name] = entry

    def get(self, name: str) -> T:
        """The entry for `name`, or an error that suggests close matches and lists all names."""
        try:
            return self._entries[name]
        except KeyError:
            raise BenchError(self.unknown_message(name)) from None

    def unknown_message(self, name: str) -> str:
        close = difflib.get_close_matches(str(name), self.names(), n=3, cutoff=0.5)
        hint = f"did you mean {', '.join(repr(c) for c in close)}? " if close else ""
        return f"unknown {self.kind} '{name}'; {hint}available: {', '.join(self.names()) or '(none)'}"

    def names(self) -> list[str]:
        return sorted(self._entries)

    def items(self) -> list[tuple[str, T]]:
        return sorted(self._entries.items())

    def remove(self, name: str) -> None:
        """Unregisters `name` (tests and plugin reloads use this; lookups of it then fail)."""
        self._entries.pop(name, None)

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def __len__(self) -> int:
        return len(self._entries)


def check_option_keys(what: str, given: Iterable[str], accepted: Iterable[str]) -> None:
    """Rejects option keys that `what` does not accept, naming the key and the accepted ones."""
    accepted = sorted(accepted)
    for key in given:
        if key not in accepted:
            close = difflib.get_close_matches(key, accepted, n=1, cutoff=0.6)
            hint = f" (did you mean '{close[0]}'?)" if close else ""
            raise BenchError(
                f"{what}: unknown option '{key}'{hint}; accepted: {', '.join(accepted) or '(none)'}"
            )


def constructor_options(cls: type, fixed: Iterable[str] = ()) -> dict[str, inspect.Parameter]:
    """Keyword options of `cls.__init__` beyond the `fixed` ones every entry receives."""
    skip = set(fixed) | {"self"}
    params = inspect.signature(cls.__init__).parameters
    return {
        name: p
        for name, p in params.items()
        if name not in skip and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)
    }


def _describe(entry: Any) -> str:
    obj = entry if isinstance(entry, type) else type(entry)
    return f"{obj.__module__}.{obj.__qualname__}"
