"""The `ray` executor: each run is a Ray task with its own resource request (CPUs, GPUs).

Records travel back to the driver as task results and the driver writes them, so the cluster
needs no shared file system; the workers need treeformer-bench installed (or, on a local
cluster, the driver's working directory). Plugin files named in a run's config
(`runtime.plugins`, from --plugin) travel by content and are loaded from a worker-local copy;
plugin modules must be importable on the workers.
"""

from __future__ import annotations

import dataclasses
import hashlib
import importlib
import os
import socket
import tempfile
from pathlib import Path
from typing import Any, Optional

from bench_common import BenchError, describe_error, first_line
from harness.sweep.executors import OnRecord, RunFn
from harness.sweep.records import Record, RunSpec, failure_record
from harness.training.failures import classify_exception

INSTALL_HINT = "pip install 'treeformer-bench[scale]'"
CONNECT_TIMEOUT_S = 5.0

# A plugin as it travels to workers: (file name, source) for a file, (module name, None) for a module.
ShippedPlugin = tuple[str, Optional[str]]


def import_ray() -> Any:
    """ray, or a one-line error that says how to install it (it is an optional extra)."""
    try:
        return importlib.import_module("ray")
    except ImportError:
        raise BenchError(f"--executor ray needs Ray, which is not installed; install it with: {INSTALL_HINT}") from None


def resource_request(spec: RunSpec, num_cpus: float) -> dict[str, float]:
    """The Ray resources one run asks for: `num_cpus` CPUs, plus one GPU when it runs on CUDA."""
    device = str(spec.config.get("device", "cpu"))
    return {"num_cpus": num_cpus, "num_gpus": 1.0 if device.startswith("cuda") else 0.0}


class RayExecutor:
    """Sends every spec to Ray at once; Ray schedules them as resources allow.

    ray_address: None starts a local cluster for this sweep; "auto" joins the cluster running on
    this machine; "HOST:PORT" (or "ray://HOST:PORT") joins that cluster, checked with a short
    connect before anything is submitted. num_cpus: CPUs each run asks for.
    """

    name = "ray"

    def __init__(self, ray_address: Optional[str] = None, num_cpus: float = 1.0):
        if not num_cpus > 0:
            raise BenchError(f"--executor ray: num_cpus must be a positive number, got {num_cpus}")
        self.address = ray_address
        self.num_cpus = num_cpus

    def map(self, run_fn: RunFn, specs: list[RunSpec], on_record: OnRecord) -> None:
        ray = import_ray()
        requests = [resource_request(spec, self.num_cpus) for spec in specs]
        shipped = [[_ship_plugin(p) for p in _plugins_of(spec)] for spec in specs]
        started_here = self._connect(ray)
        try:
            _check_resources(ray, requests)
            task = ray.remote(max_retries=0)(_run_in_worker)
            pending = {
                task.options(**request).remote(run_fn, spec, plugins): spec
                for spec, request, plugins in zip(specs, requests, shipped)
            }
            while pending:
                (done,), _ = ray.wait(list(pending), num_returns=1)
                spec = pending.pop(done)
                on_record(spec, _result_or_failure(ray, done, spec))
        finally:
            if started_here:
                ray.shutdown()

    def _connect(self, ray: Any) -> bool:
        """Joins (or starts) the cluster; True when this call started the Ray connection."""
        if self.address not in (None, "auto"):
            _check_reachable(self.address)
        if ray.is_initialized():
            return False
        try:
            ray.init(address=self.address, include_dashboard=False)
        except ConnectionError as err:
            where = self.address or "a new local cluster"
            raise BenchError(f"--ray-address {where}: cannot connect to Ray: {first_line(err)}") from None
        return True


def _check_reachable(address: str) -> None:
    """Fails in seconds, not after Ray's minute of retries, when nothing listens at HOST:PORT."""
    host_port = address.split("://", 1)[-1]
    host, _, port = host_port.rpartition(":")
    if not host or not port.isdigit():
        raise BenchError(f"--ray-address: expected auto, HOST:PORT or ray://HOST:PORT, got '{address}'")
    try:
        socket.create_connection((host, int(port)), timeout=CONNECT_TIMEOUT_S).close()
    except OSError as err:
        raise BenchError(
            f"--ray-address {address}: no Ray cluster reachable there within {CONNECT_TIMEOUT_S:g} s "
            f"({err.strerror or err})"
        ) from None


def _check_resources(ray: Any, requests: list[dict[str, float]]) -> None:
    """Refuses, before any run starts, requests the cluster can never meet (Ray would wait forever)."""
    available = ray.cluster_resources()
    for resource, key in (("GPU", "num_gpus"), ("CPU", "num_cpus")):
        wanted = max((request[key] for request in requests), default=0.0)
        have = available.get(resource, 0.0)
        if wanted > have:
            what = "--device cuda" if resource == "GPU" else "each run"
            raise BenchError(
                f"--executor ray: {what} needs {wanted:g} {resource} per run, but the Ray cluster has {have:g}"
            )


def _result_or_failure(ray: Any, ref: Any, spec: RunSpec) -> Record:
    """The task's record, or a failure row when the worker died or Ray killed it for memory."""
    try:
        return ray.get(ref)
    except ray.exceptions.OutOfMemoryError as err:
        return failure_record(spec, "oom", f"Ray killed the run's worker for memory: {first_line(err)}")
    except ray.exceptions.RayError as err:
        return failure_record(spec, "error", f"Ray task failed: {describe_error(err)}")


def _plugins_of(spec: RunSpec) -> list[str]:
    return list((spec.config.get("runtime") or {}).get("plugins") or [])


def _ship_plugin(plugin: str) -> ShippedPlugin:
    """Plugin files travel by content, so workers without the driver's disk can load them."""
    path = Path(plugin)
    if plugin.endswith(".py") or path.exists():
        if not path.is_file():
            raise BenchError(f"--plugin {plugin}: no such file")
        return (path.name, path.read_text())
    return (plugin, None)


def _run_in_worker(run_fn: RunFn, spec: RunSpec, plugins: list[ShippedPlugin]) -> Record:
    """The Ray task: runs the spec with its plugin files replaced by worker-local copies.

    The record keeps the driver's config (plugin paths as the user gave them), so it is the same
    record a local run writes.
    """
    try:
        worker_spec = spec
        if plugins:
            runtime = {**spec.config["runtime"], "plugins": _materialise_plugins(plugins)}
            worker_spec = dataclasses.replace(spec, config={**spec.config, "runtime": runtime})
        record = run_fn(worker_spec)
        if worker_spec is not spec and isinstance(record, dict) and "config" in record:
            record["config"] = spec.config
        return record
    except Exception as err:  # noqa: BLE001  a failed run is a row, not a lost task
        return failure_record(spec, *classify_exception(err))


def _materialise_plugins(plugins: list[ShippedPlugin]) -> list[str]:
    """Writes shipped plugin files into a worker-local folder; returns what load_plugin takes.

    The folder is named by the source's digest, so a worker running several tasks loads the same
    file path each time and load_plugin registers the plugin once.
    """
    names = []
    for name, source in plugins:
        if source is None:
            names.append(name)
            continue
        digest = hashlib.sha256(source.encode()).hexdigest()[:16]
        target = Path(tempfile.gettempdir()) / "treeformer-bench-plugins" / digest / name
        if not target.is_file():  # written atomically: workers on one node may race here
            target.parent.mkdir(parents=True, exist_ok=True)
            partial = target.with_name(f".{name}.{os.getpid()}")
            partial.write_text(source)
            os.replace(partial, target)
        names.append(str(target))
    return names
