"""Executors run a sweep's runs: `local` (in this process, in order) and more behind one interface.

An executor only runs `run_fn(spec)` for each spec and hands each record to `on_record` in the
driver process, which writes it; so executors need no shared file system and never write records.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Protocol

from bench_common import BenchError

Record = dict[str, Any]


@dataclass(frozen=True)
class RunSpec:
    """One training run: a method variant on a task with a seed and its fully resolved config."""

    method: str  # variant label, e.g. "treeformer-tc-h4"; equals the registry name for plain methods
    task: str
    seed: int
    config: dict[str, Any] = field(default_factory=dict, hash=False, compare=False)
    config_hash: str = ""

    @property
    def key(self) -> str:
        return f"{self.task}/{self.method}/seed{self.seed}"


RunFn = Callable[[RunSpec], Record]
OnRecord = Callable[[RunSpec, Record], None]


class Executor(Protocol):
    name: str

    def map(self, run_fn: RunFn, specs: list[RunSpec], on_record: OnRecord) -> None:
        """Runs every spec; calls on_record(spec, record) in the driver as each finishes."""


class LocalExecutor:
    """Runs specs one after another in this process (the default)."""

    name = "local"

    def map(self, run_fn: RunFn, specs: list[RunSpec], on_record: OnRecord) -> None:
        for spec in specs:
            on_record(spec, run_fn(spec))


EXECUTORS: dict[str, Callable[..., Executor]] = {"local": LocalExecutor}


def get_executor(name: str, **options: Any) -> Executor:
    """The executor called `name`; its options come from CLI flags (e.g. ray_address)."""
    try:
        factory = EXECUTORS[name]
    except KeyError:
        raise BenchError(f"--executor: unknown executor '{name}'; available: {', '.join(sorted(EXECUTORS))}") from None
    return factory(**options)
