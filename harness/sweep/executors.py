"""Executors run a sweep's runs: `local` (in this process, in order) and more behind one interface.

An executor only runs `run_fn(spec)` for each spec and hands each record to `on_record` in the
driver process, which writes it; so executors need no shared file system and never write records.
`subprocess` (harness/sweep/executor_subprocess.py) isolates each run in its own process with a
wall-clock limit and a memory cap; `ray` (harness/sweep/executor_ray.py) sends each run to a Ray cluster.
Both are imported only when chosen, so `list` never imports ray.
"""

from __future__ import annotations

import importlib
from typing import Any, Callable, Optional, Protocol

from bench_common import BenchError, check_option_keys
from bench_common.registry import constructor_options
from harness.sweep.records import Record, RunSpec

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


def _lazy(module: str, attribute: str) -> Callable[..., Executor]:
    """A factory that imports its executor's module only when the executor is built."""

    def factory(**options: Any) -> Executor:
        return getattr(importlib.import_module(module), attribute)(**options)

    factory.target = (module, attribute)  # type: ignore[attr-defined]
    return factory


EXECUTORS: dict[str, Callable[..., Executor]] = {
    "local": LocalExecutor,
    "subprocess": _lazy("harness.sweep.executor_subprocess", "SubprocessExecutor"),
    "ray": _lazy("harness.sweep.executor_ray", "RayExecutor"),
}


def get_executor(name: str, **options: Any) -> Executor:
    """The executor called `name`; its options come from CLI flags (e.g. ray_address)."""
    try:
        factory = EXECUTORS[name]
    except KeyError:
        raise BenchError(f"--executor: unknown executor '{name}'; available: {', '.join(sorted(EXECUTORS))}") from None
    from harness.training.distributed import launched_by_torchrun

    if name != "local" and launched_by_torchrun():
        raise BenchError(f"--executor {name} cannot run under torchrun: torchrun trains one run with DDP; use --executor local")
    target = getattr(factory, "target", None)
    cls = getattr(importlib.import_module(target[0]), target[1]) if target else factory
    check_option_keys(f"--executor {name}", options, constructor_options(cls))
    return factory(**options)


def executor_from_flags(
    name: str,
    ray_address: Optional[str] = None,
    timeout_s: Optional[float] = None,
    memory_gb: Optional[float] = None,
    workers: Optional[int] = None,
) -> Executor:
    """Builds the executor the CLI flags ask for; a flag that does not apply to it is an error.

    Plugins need no flag here: the --plugin list travels in every run's config
    (`runtime.plugins`), which is what workers load (see harness/sweep/executor_ray.py).
    """
    if ray_address is not None and name != "ray":
        raise BenchError(f"--ray-address applies to --executor ray only, not '{name}'")
    subprocess_flags = {"--run-timeout": timeout_s, "--run-memory-gb": memory_gb, "--workers": workers}
    given = [flag for flag, value in subprocess_flags.items() if value is not None]
    if given and name != "subprocess":
        verb = "apply" if len(given) > 1 else "applies"
        raise BenchError(f"{' and '.join(given)} {verb} to --executor subprocess only, not '{name}'")
    if name == "subprocess":
        return get_executor(name, timeout_s=timeout_s, memory_gb=memory_gb, workers=1 if workers is None else workers)
    if name == "ray":
        return get_executor(name, ray_address=ray_address)
    return get_executor(name)
