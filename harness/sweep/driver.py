"""Sweeps: a suite and flags -> resolved RunSpecs -> records, resuming what is already done.

Everything that can be wrong with the input (unknown suite, task, method, option, config key,
value type, batch size vs world size, output directory of another version) is found while
resolving, before any run starts or any file is written. On a rerun (resume after an interruption)
`plan_runs` decides: done runs are skipped, failed ones retried, and a finished record of another
config is refused unless `force` (see its docstring).

The config holds the data's source and fingerprint (`data_source`, lra/fingerprint.py: files by
path, size and mtime, generated data by recipe), so the hash changes when the data does: a resumed
sweep never keeps a record made on other data. Planning reads no data (stat only), so a dry run
(`plan`) shows the exact config and hash a real run records, without preparing anything.
"""

from __future__ import annotations

import json
import os
import sys
import time
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional, Sequence

import torch.distributed as torch_dist

from bench_common import BenchError
from lra import default_data_dir

from harness.config import layered as cfg
from harness.measure.env import command_line
from harness.training.distributed import is_primary, shard_batch_size, world_from_env
from harness.sweep.executors import Executor
from harness.sweep.lock import output_lock
from harness.sweep.records import RunSpec
from harness.sweep.records import RETRIED, previous_attempts, process_alive
from harness.sweep.records import (FAILED, check_output_version, read_record, read_record_if_valid, record_path,
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
    options: list[str] = field(default_factory=list)  # --option METHOD.KEY=VALUE: one method's option


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
                file_layer: dict[str, Any], set_layers: list[dict[str, Any]],
                sources: Optional[dict[str, dict[str, Any]]] = None,
                option_layers: Sequence[tuple[str, dict[str, Any]]] = ()) -> RunSpec:
    """Layers, in order: typed defaults, task defaults (family), suite, suite-per-task, method
    variant, --config file, --set, then the --option layers naming this variant's label or method.
    Returns the spec with its fully resolved config and hash.

    `sources` memoises data sources within one resolution (a Pathfinder fingerprint stats 200k files)."""
    from methods.registry import validate_attention_options

    task = runner.load_task(task_name)
    user_layers = [
        cfg.check_layer(suite.overrides, f"suite '{suite.name}' overrides"),
        cfg.check_layer(suite.task_overrides.get(task_name, {}), f"suite '{suite.name}' overrides of {task_name}"),
        cfg.check_layer(variant.layer(), f"suite '{suite.name}' method '{variant.label}'"),
        file_layer,
        *set_layers,
        *[layer for method, layer in option_layers if method in (variant.label, variant.attention)],
    ]
    family = cfg.family_of([{"family": suite.family}, *user_layers])
    data: dict[str, Any] = {}
    for layer in user_layers:  # data params first: they can change the model's shapes
        data = cfg.merge(data, layer.get("data", {}))
    data = dict(task.check_params(data))
    task_defaults = cfg.task_layer(task, family, data)
    config = cfg.merge(cfg.default_layer(request.device), task_defaults)
    for layer in [{"family": suite.family}, *user_layers]:
        config = cfg.merge(config, {k: v for k, v in layer.items() if k != "data"})
    config["device"] = request.device  # --device is the one place the device is chosen
    cfg.check_task_fit(config["model"], task_defaults["model"], task_name)
    model = config["model"]
    try:
        validate_attention_options(model["attention"], model["attention_options"])
    except BenchError as err:
        if any("attention_options" in layer.get("model", {}) for layer in (file_layer, *set_layers)):
            raise BenchError(f"{err} (--set and --config give attention options to every method of the sweep; "
                             f"to give them to some methods only, use --option METHOD.KEY=VALUE)") from None
        raise
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
    source = data_source(task, request.data_dir, config["data"], {} if sources is None else sources)
    config["data_source"] = {"source": source["source"], "fingerprint": source["fingerprint"]}
    config["runtime"] = {"suite": suite.name, "data_dir": str(request.data_dir), "plugins": list(request.plugins),
                         "checkpoint_dir": str(Path(request.out) / "checkpoints"), "data_root": source["root"],
                         "command": command_line()}  # workers of any executor record the user's command
    return RunSpec(method=variant.label, task=task_name, seed=seed, config=config,
                   config_hash=cfg.config_hash(config))


def data_source(task: Any, data_dir: Path, params: dict[str, Any], memo: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """{"source", "root", "fingerprint"} of the data this run would read (no data is read)."""
    key = json.dumps([task.name, str(data_dir), params], sort_keys=True, default=str)
    if key not in memo:
        memo[key] = task.data_source(Path(data_dir), dict(params))
    return memo[key]


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
    reference = matching_reference(request)
    reference_variants = select_methods(suite, [reference]) if reference else []
    option_layers = parse_options(request.options, variants + reference_variants)
    sources: dict[str, dict[str, Any]] = {}
    specs = [resolve_run(request, suite, task, variant, seed, file_layer, set_layers, sources, option_layers)
             for task in tasks for variant in variants for seed in seeds]
    if reference:
        from harness.sweep.matching import cost_option

        for method, layer in option_layers:
            (key,) = layer["model"]["attention_options"]
            chosen = [v.attention for v in variants
                      if method in (v.label, v.attention) and getattr(cost_option(v.attention), "name", None) == key]
            if chosen:
                raise BenchError(f"--option {method}.{key}: matching MACs to {reference} chooses {chosen[0]}'s {key} "
                                 f"per task and seed; drop --option or --match-macs")
        (variant,) = reference_variants
        if variant not in variants:  # matched runs need their reference's runs, selected or not
            specs += [resolve_run(request, suite, task, variant, seed, file_layer, set_layers, sources, option_layers)
                      for task in tasks for seed in seeds]
    check_data_fits(specs)
    return specs


def matching_reference(request: SweepRequest) -> Optional[str]:
    """The method whose trained MACs the others are matched to (--match-macs or the suite's), or None."""
    return request.match_macs or get_suite(request.suite).match_macs


def run_matched(specs: list[RunSpec], reference: str, out: Path, executor: Executor, force: bool = False,
                retry_failed: bool = False) -> tuple[list[dict[str, Any]], list[tuple[RunSpec, str]]]:
    """Two passes: the runs that need no matching (the reference among them), then the others with
    their cost option solved against the reference run of their task and seed. Returns the records
    and the runs that could not be matched, each with the reason (its reference failed)."""
    from harness.sweep.matching import match_to_reference, needs_matching

    later = [spec for spec in specs if needs_matching(spec, reference)]
    records = run_sweep([spec for spec in specs if spec not in later], out, executor, force, retry_failed)
    matched, unmatched = [], []
    for spec in later:
        solved, reason = match_to_reference(spec, reference, Path(out))
        if solved is None:
            unmatched.append((spec, reason))
            print(f"{spec.key}: not run: {reason}", file=sys.stderr)
        else:
            matched.append(solved)
    return records + (run_sweep(matched, out, executor, force, retry_failed) if matched else []), unmatched


def parse_options(items: list[str], variants: list[MethodVariant]) -> list[tuple[str, dict[str, Any]]]:
    """`--option METHOD.KEY=VALUE` -> (METHOD, a layer setting model.attention_options.KEY) each.
    METHOD is a variant label or a method name of this sweep (the --match-macs reference included)."""
    names = sorted({name for variant in variants for name in (variant.label, variant.attention)})
    layers = []
    for item in items:
        where = f"--option {item}"
        target, equals, text = item.partition("=")
        method, dot, key = target.rpartition(".")
        if not equals or not dot or not method or not key:
            raise BenchError(f"{where}: expected METHOD.KEY=VALUE, e.g. --option treeformer-tf.height=3")
        if method not in names:
            raise BenchError(f"{where}: method '{method}' is not in this sweep (its methods: {', '.join(names)})")
        value = cfg.parse_text(where, text, Any)
        cfg.check_finite(where, value)
        layers.append((method, {"model": {"attention_options": {key: value}}}))
    return layers


def check_data_fits(specs: list[RunSpec]) -> None:
    """Refuses a generated data set that cannot fit in memory, before anything is generated. The
    estimate is a lower bound (one byte per token; loaders use one to eight), so a data set that
    would fit is never refused."""
    from harness.measure.env import available_memory_bytes

    available = available_memory_bytes()
    for spec in specs:
        count = spec.config["data"].get("num_examples")
        if available is None or not isinstance(count, int):
            continue
        length = spec.config["model"]["max_seq_len"]
        if count * length > available:
            raise BenchError(
                f"data.num_examples={count}: task '{spec.task}' would hold at least {count * length / 2**30:.1f} GiB "
                f"of data ({count} examples of {length} tokens), more than the {available / 2**30:.1f} GiB of memory "
                f"available; lower data.num_examples")


def plan(specs: list[RunSpec], out: Path, force: bool = False, retry_failed: bool = False,
         reference: Optional[str] = None) -> list[dict[str, Any]]:
    """One line per planned run, as `run --dry-run` prints it; trains nothing, writes nothing.

    `action` is what the real run with the same flags does: skip (a finished record of this config),
    run, rerun (replacing a record, kept in previous_attempts), refuse (a finished record of
    another config, named in `conflict`) or wait (a matched run whose reference has not run: no
    config hash yet, `waits` says why)."""
    from harness.sweep.matching import match_to_reference, needs_matching

    lines = []
    for spec in specs:
        if reference and needs_matching(spec, reference):
            solved, reason = match_to_reference(spec, reference, Path(out))
            if solved is None:
                lines.append({"task": spec.task, "method": spec.method, "seed": spec.seed, "config": spec.config,
                              "config_hash": None, "record_exists": False, "action": "wait", "waits": reason})
                continue
            spec = solved
        path = record_path(out, spec.task, spec.method, spec.seed)
        existing = read_record_if_valid(path)
        action = decide(spec, existing, force, retry_failed)
        line = {"task": spec.task, "method": spec.method, "seed": spec.seed, "config": spec.config,
                "config_hash": spec.config_hash,
                "record_exists": existing is not None and existing["config_hash"] == spec.config_hash,
                "action": action}
        if action == "refuse":
            line["conflict"] = conflict_line(path, existing, spec)
        lines.append(line)
    return lines


def decide(spec: RunSpec, existing: Optional[dict[str, Any]], force: bool, retry_failed: bool) -> str:
    """skip, run, rerun or refuse: see `plan_runs`."""
    if existing is None:
        return "run"
    if force or existing["status"] in RETRIED or (
            retry_failed and existing["status"] != "ok" and existing["config_hash"] == spec.config_hash):
        return "rerun"
    return "refuse" if existing["config_hash"] != spec.config_hash else "skip"


def conflict_line(path: Path, existing: dict[str, Any], spec: RunSpec) -> str:
    return (f"{path} holds a finished '{existing['status']}' run of another config "
            f"({config_changes(existing['config'], spec.config)})")


def remove_stale_temporaries(out: Path) -> list[Path]:
    """Deletes `.<name>.<pid>.tmp` files (atomic writes of records and checkpoints) left by killed
    processes; a file whose writer is still alive on this machine is kept."""
    removed = []
    for path in Path(out).rglob(".*.tmp"):
        writer = path.name.split(".")[-2]
        if writer.isdigit() and process_alive(int(writer)):
            continue
        path.unlink(missing_ok=True)
        removed.append(path)
    return removed


def run_sweep(specs: list[RunSpec], out: Path, executor: Executor, force: bool = False,
              retry_failed: bool = False) -> list[dict[str, Any]]:
    """Runs what is not done yet; returns every run's record, in spec order. The primary process
    holds the folder's lock throughout, so a second sweep on `out` is refused, not interleaved."""
    out = Path(out)
    with output_lock(out) if is_primary() else nullcontext():
        return _run_locked(specs, out, executor, force, retry_failed)


def _run_locked(specs: list[RunSpec], out: Path, executor: Executor, force: bool,
                retry_failed: bool) -> list[dict[str, Any]]:
    check_output_version(out)
    if is_primary():
        stale = remove_stale_temporaries(out)
        if stale:
            print(f"removed {len(stale)} temporary file(s) left by killed runs in {out}", file=sys.stderr)
    records, pending, history = plan_runs(specs, out, force, retry_failed)
    if is_primary():
        for line in damaged_records(specs, out):
            print(line, file=sys.stderr)
        update_config_file(out, {s.key: {"config_hash": s.config_hash, "config": s.config} for s in specs})
        if len(pending) < len(specs) or history:
            print(plan_line(specs, records, pending, history, out), file=sys.stderr)
    if torch_dist.is_initialized():
        torch_dist.barrier()  # every rank decides what to run before rank 0 writes new records

    started = time.perf_counter()
    last = [started]  # when the previous record came in: a run's own time in a sequential sweep

    def on_record(spec: RunSpec, record: dict[str, Any]) -> None:
        if spec.key in history:
            record["previous_attempts"] = history[spec.key]
        if record["status"] in FAILED and not record["metrics"]["history"]:
            runner.keep_measured(spec, record)  # a killed run: what its checkpoint measured
        records[spec.key] = record
        if is_primary():
            write_record(out, record)
            now = time.perf_counter()
            print(summary_line(len(records), len(specs), record, now - last[0], now - started), flush=True)
            last[0] = now

    executor.map(runner.execute_run, pending, on_record)
    if is_primary():
        remove_empty_folders(out / "checkpoints")
    done = [records[spec.key] for spec in specs if spec.key in records]
    if is_primary():
        write_sweep_summary(out, specs, done, ran=len(pending), wall_seconds=time.perf_counter() - started,
                            executor=executor.name)
    return done


def plan_runs(specs: list[RunSpec], out: Path, force: bool, retry_failed: bool
              ) -> tuple[dict[str, Any], list[RunSpec], dict[str, list[dict[str, Any]]]]:
    """Which runs are done (their records), which to run, and the history each rerun replaces.

    A record whose status is `ok` is done; `diverged` and `unsupported` are done unless
    `retry_failed`; `oom`, `timeout` and `error` are retried, whatever config made them (a failed
    run has no result to protect, and fixing it often means changing the config). A done record
    of another config is never replaced without `force`: that is a one-line error, before any run.
    """
    done: dict[str, Any] = {}
    pending: list[RunSpec] = []
    history: dict[str, list[dict[str, Any]]] = {}
    conflicts = []
    for spec in specs:
        path = record_path(out, spec.task, spec.method, spec.seed)
        existing = read_record_if_valid(path)
        action = decide(spec, existing, force, retry_failed)
        if action in ("run", "rerun"):
            pending.append(spec)
        if action == "rerun":
            history[spec.key] = previous_attempts(existing, path)
        elif action == "refuse":
            conflicts.append(conflict_line(path, existing, spec))
        elif action == "skip":
            done[spec.key] = existing
    if conflicts:
        raise refusal(conflicts)
    return done, pending, history


def refusal(conflicts: list[str]) -> BenchError:
    """The one line refusing finished records of another config (a run and its dry run say the same)."""
    more = f" (and {len(conflicts) - 1} more run(s))" if len(conflicts) > 1 else ""
    return BenchError(f"{conflicts[0]}{more}; pass --force to replace it, or choose another --out")


def config_changes(old: dict[str, Any], new: dict[str, Any], shown: int = 3) -> str:
    """'train.steps: 20 -> 5, ...': the dotted keys whose values differ (runtime aside)."""
    # An empty section ({} as a leaf) says nothing that its keys do not say: not a difference.
    before, after = ({k: v for k, v in cfg.flatten(c).items() if v != {}} for c in (old, new))
    keys = sorted(key for key in before.keys() | after.keys()
                  if not key.startswith("runtime") and before.get(key, "-") != after.get(key, "-"))
    parts = [f"{key}: {_shown(before, key)} -> {_shown(after, key)}" for key in keys[:shown]]
    if len(keys) > shown:
        parts.append(f"{len(keys) - shown} more key(s)")
    return ", ".join(parts) or "same keys, other hash"


def _shown(values: dict[str, Any], key: str) -> str:
    return json.dumps(values[key], default=str) if key in values else "(absent)"


def plan_line(specs: list[RunSpec], done: dict[str, Any], pending: list[RunSpec],
              history: dict[str, list[dict[str, Any]]], out: Path) -> str:
    """What a rerun will do, e.g. '3 of 4 runs already done in D; 1 to run (1 retrying an earlier timeout)'."""
    line = f"{len(done)} of {len(specs)} runs already done in {out}; {len(pending)} to run"
    retried = sorted({attempts[-1]["status"] for attempts in history.values()})
    if history:
        line += f" ({len(history)} replacing an earlier {'/'.join(retried)} record)"
    kept = sorted({r["status"] for r in done.values() if r["status"] != "ok"})
    if kept:
        line += f"; {'/'.join(kept)} runs are kept (--retry-failed reruns them)"
    return line


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


def damaged_records(specs: list[RunSpec], out: Path) -> list[str]:
    """One line per record file of this sweep that is there but unreadable: its run is redone."""
    lines = []
    for spec in specs:
        path = record_path(out, spec.task, spec.method, spec.seed)
        if path.exists():
            try:
                read_record(path)
            except BenchError as err:
                lines.append(f"redoing {spec.key}: its record is damaged ({err})")
    return lines


def remove_empty_folders(root: Path) -> None:
    """Deletes the empty folders under `root` (and `root` itself when empty): a finished run
    deletes its checkpoint file, and its task/method folders would otherwise stay behind."""
    if not root.is_dir():
        return
    for folder in sorted((p for p in root.rglob("*") if p.is_dir()), key=lambda p: len(p.parts), reverse=True):
        if not any(folder.iterdir()):
            folder.rmdir()
    if not any(root.iterdir()):
        root.rmdir()


def summary_line(done: int, total: int, record: dict[str, Any], run_seconds: float, sweep_seconds: float) -> str:
    metrics = record["metrics"]
    scores = " ".join(f"{k}={metrics[k]:.3f}" for k in ("val_accuracy", "test_accuracy") if metrics[k] is not None)
    reason = f" ({record['reason']})" if record["reason"] else ""
    key = f"{record['task']}/{record['method']}/seed{record['seed']}"
    return (f"[{done}/{total}] {key}: {record['status']} {scores}{reason} "
            f"[{run_seconds:.0f}s; sweep {sweep_seconds:.0f}s]")


def failed(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [r for r in records if r["status"] in FAILED]
