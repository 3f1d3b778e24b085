"""Sweeps: a suite and flags -> resolved RunSpecs -> records, resuming what is already done.

Everything that can be wrong with the input (unknown suite, task, method, option, config key,
value type, batch size vs world size, output directory of another version) is found while
resolving, before any run starts or any file is written. A run whose record exists with the same
config hash is skipped (resume after an interruption); `force` reruns it.
"""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

import torch.distributed as torch_dist

from bench_common import BenchError
from lra import default_data_dir

from harness.config import layered as cfg
from harness.training.distributed import is_primary, shard_batch_size, world_from_env
from harness.sweep.executors import Executor
from harness.sweep.records import RunSpec
from harness.sweep.records import (FAILED, check_output_version, read_record_if_valid, record_path,
                             update_config_file, write_json_atomic, write_record)
from harness.sweep import runner
from harness.config.suites import MethodVariant, Suite, get_suite, plain


@dataclass
class SweepRequest:
    """What the user asked for (CLI flags), before resolution."""

    suite: str = "quick"
    methods: Optional[list[str]] = None  # variant labels of the suite, or registry names
    tasks: Optional[list[str]] = None
    seeds: Optional[list[int]] = None
    config_file: Optional[Path] = None
    sets: list[str] = field(default_factory=list)
    device: str = "cpu"
    data_dir: Path = field(default_factory=default_data_dir)
    out: Path = Path("runs")
    plugins: list[str] = field(default_factory=list)
    match_macs: Optional[str] = None  # --match-macs: match Linformer/Performer to this method's MACs


def select_methods(suite: Suite, names: Optional[list[str]]) -> list[MethodVariant]:
    """The suite's variants, or the named ones: a suite label, else a registered method name."""
    if not names:
        return list(suite.methods)
    from methods import ATTENTION, get_attention_class

    chosen = []
    for name in names:
        labels = [m.label for m in suite.methods]
        if name in labels:
            chosen.append(suite.variant(name))
            continue
        if name not in ATTENTION:
            get_attention_class(name)  # raises: unknown method, with suggestions
        chosen.append(plain(name))
    return chosen


def resolve_run(request: SweepRequest, suite: Suite, task_name: str, variant: MethodVariant, seed: int,
                file_layer: dict[str, Any], set_layers: list[dict[str, Any]]) -> RunSpec:
    """Layers, in order: typed defaults, task defaults (family), suite, suite-per-task, method
    variant, --config file, --set. Returns the spec with its fully resolved config and hash."""
    from methods.registry import validate_attention_options

    task = runner.load_task(task_name)
    user_layers = [
        cfg.check_layer(suite.overrides, f"suite '{suite.name}' overrides"),
        cfg.check_layer(suite.task_overrides.get(task_name, {}), f"suite '{suite.name}' overrides of {task_name}"),
        cfg.check_layer(variant.layer(), f"suite '{suite.name}' method '{variant.label}'"),
        file_layer,
        *set_layers,
    ]
    family = cfg.family_of([{"family": suite.family}, *user_layers])
    data: dict[str, Any] = {}
    for layer in user_layers:  # data params first: they can change the model's shapes
        data = cfg.merge(data, layer.get("data", {}))
    data = dict(task.check_params(data))
    config = cfg.merge(cfg.default_layer(request.device), cfg.task_layer(task, family, data))
    for layer in [{"family": suite.family}, *user_layers]:
        config = cfg.merge(config, {k: v for k, v in layer.items() if k != "data"})
    config["device"] = request.device  # --device is the one place the device is chosen
    model = config["model"]
    validate_attention_options(model["attention"], model["attention_options"])
    for index, spec in model.get("layer_attention", {}).items():
        validate_attention_options(spec.get("name", model["attention"]), spec.get("options", {}))
    if config["bootstrap"]:
        from harness.training.bootstrap import validate_bootstrap

        validate_bootstrap(config["bootstrap"])
    cfg.finish(config)
    check_cores_build(config)
    shard_batch_size(config["train"]["batch_size"], world_from_env().world_size)
    config.update(version=cfg.CONFIG_VERSION, task=task_name, task_version=task.version,
                  method=variant.label, attention=model["attention"], seed=seed)
    config["runtime"] = {"suite": suite.name, "data_dir": str(request.data_dir), "plugins": list(request.plugins),
                         "checkpoint_dir": str(Path(request.out) / "checkpoints")}
    return RunSpec(method=variant.label, task=task_name, seed=seed, config=config,
                   config_hash=cfg.config_hash(config))


def check_cores_build(config: dict[str, Any]) -> None:
    """Builds each layer's attention core once, so a bad option combination (e.g. a tree taller
    than the sequence allows) is a usage error now rather than a failed run later. A plugin core
    whose constructor or MAC counts raise, or whose counts are not counts, is refused the same way."""
    from harness.training.model import build_core

    model = cfg.model_config(config)
    for layer in range(model.num_layers):
        name, _ = model.layer_spec(layer)
        step = "build"
        try:
            core = build_core(model, layer)
            for step in ("macs", "algorithmic_macs"):
                count = getattr(core, step)(model.encoded_length)
                if isinstance(count, bool) or not isinstance(count, int) or count < 0:
                    raise BenchError(f"{step}({model.encoded_length}) returned {count!r}, expected a non-negative integer")
        except BenchError as err:
            if step == "build":
                raise
            raise BenchError(f"attention method '{name}' (layer {layer}): {err}") from err
        except Exception as err:
            raise BenchError(f"attention method '{name}' (layer {layer}): {step} raised "
                             f"{type(err).__name__}: {err}") from err


def resolve_specs(request: SweepRequest) -> list[RunSpec]:
    suite = get_suite(request.suite)
    file_layer = cfg.load_config_file(request.config_file) if request.config_file else {}
    set_layers = [cfg.parse_set(item) for item in request.sets]
    tasks = request.tasks or list(suite.tasks)
    seeds = request.seeds if request.seeds is not None else list(suite.seeds)
    variants = select_methods(suite, request.methods)
    specs = [resolve_run(request, suite, task, variant, seed, file_layer, set_layers)
             for task in tasks for variant in variants for seed in seeds]
    reference = request.match_macs or suite.match_macs
    if reference:
        from harness.sweep.matching import match_specs

        (variant,) = select_methods(suite, [reference])
        specs = match_specs(specs, reference, request.data_dir, lambda task: resolve_run(
            request, suite, task, variant, seeds[0], file_layer, set_layers))
    return specs


def run_sweep(specs: list[RunSpec], out: Path, executor: Executor, force: bool = False) -> list[dict[str, Any]]:
    """Runs what is not done yet; returns every run's record, in spec order."""
    out = Path(out)
    check_output_version(out)
    records: dict[str, dict[str, Any]] = {}
    pending = []
    for spec in specs:
        existing = read_record_if_valid(record_path(out, spec.task, spec.method, spec.seed))
        if existing is not None and existing["config_hash"] == spec.config_hash and not force:
            records[spec.key] = existing
        else:
            pending.append(spec)
    if is_primary():
        update_config_file(out, {s.key: {"config_hash": s.config_hash, "config": s.config} for s in specs})
        if len(pending) < len(specs):
            print(f"{len(specs) - len(pending)} of {len(specs)} runs already done in {out}; "
                  f"{len(pending)} to run", file=sys.stderr)
    if torch_dist.is_initialized():
        torch_dist.barrier()  # every rank decides what to run before rank 0 writes new records

    started = time.perf_counter()

    def on_record(spec: RunSpec, record: dict[str, Any]) -> None:
        records[spec.key] = record
        if is_primary():
            write_record(out, record)
            print(summary_line(len(records), len(specs), record, time.perf_counter() - started), flush=True)

    executor.map(runner.execute_run, pending, on_record)
    done = [records[spec.key] for spec in specs if spec.key in records]
    if is_primary():
        write_sweep_summary(out, specs, done, ran=len(pending), wall_seconds=time.perf_counter() - started,
                            executor=executor.name)
    return done


def write_sweep_summary(out: Path, specs: list[RunSpec], done: list[dict[str, Any]], ran: int,
                        wall_seconds: float, executor: str) -> None:
    """`<out>/sweep.json`: the last sweep's wall time and outcome (the suite's own record)."""
    from harness.measure.env import environment

    statuses: dict[str, int] = {}
    for record in done:
        statuses[record["status"]] = statuses.get(record["status"], 0) + 1
    suites = sorted({s.config["runtime"]["suite"] for s in specs})
    write_json_atomic(Path(out) / "sweep.json", {
        "suites": suites, "runs": len(specs), "ran": ran, "skipped": len(specs) - ran,
        "wall_seconds": wall_seconds, "statuses": statuses, "executor": executor,
        "env": environment(specs[0].config["device"] if specs else "cpu"),
    })


def summary_line(done: int, total: int, record: dict[str, Any], elapsed: float) -> str:
    metrics = record["metrics"]
    scores = " ".join(f"{k}={metrics[k]:.3f}" for k in ("val_accuracy", "test_accuracy") if metrics[k] is not None)
    reason = f" ({record['reason']})" if record["reason"] else ""
    key = f"{record['task']}/{record['method']}/seed{record['seed']}"
    return f"[{done}/{total}] {key}: {record['status']} {scores}{reason} [{elapsed:.0f}s]"


def failed(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [r for r in records if r["status"] in FAILED]
