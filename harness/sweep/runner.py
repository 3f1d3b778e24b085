"""One run, start to finish: task + resolved config -> model -> training -> a filled record.

`execute_run` never raises for a failing run: unsupported settings, divergence, out-of-memory,
time-outs and errors all come back as a record with that status (failures are rows), so a sweep
always goes on. It writes nothing but its own training checkpoint; the sweep driver writes
records, so executors on other machines need no shared file system.

The record's `data` block says which data the run read (source, root, fingerprint, split sizes);
data that changed since the sweep was planned fail the run rather than being recorded under a
config hash that names other data. A run killed from outside (an executor's wall-clock limit, the
OOM killer) keeps what it measured: `keep_measured` reads it back from the run's checkpoint,
written at each evaluation.
"""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any, Optional

import numpy as np
import torch

from bench_common import BenchError, describe_error
from harness.config.layered import CONFIG_VERSION, model_config, train_config
from harness.measure.baselines import class_baselines
from harness.training.batches import check_split
from harness.training.distributed import init_from_env, rank_device
from harness.sweep.records import RunSpec, new_record
from harness.training.failures import is_out_of_memory
from harness.training.loop import Splits, train
from harness.training.state import TrainingState
from lra import default_data_dir


def load_task(name: str) -> Any:
    """The task `name` from the task registry (imported here so `lra` loads only when needed)."""
    from lra import get_task

    return get_task(name)


def checkpoint_path(spec: RunSpec) -> Optional[Path]:
    directory = spec.config.get("runtime", {}).get("checkpoint_dir")
    return Path(directory) / spec.task / spec.method / f"seed{spec.seed}.pt" if directory else None


def unsupported(task: Any, config: dict[str, Any], device: str) -> Optional[str]:
    """Why a layer's method cannot run this task here (declared capabilities), before building."""
    from methods import get_attention_class
    from methods.base import unsupported_reason

    model = model_config(config)
    for layer in range(model.num_layers):
        name, _ = model.layer_spec(layer)
        reason = unsupported_reason(get_attention_class(name), model.encoded_length, model.encoded_length,
                                    device, has_padding=task.pad_id is not None)
        if reason:
            return reason
    return None


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def execute_run(spec: RunSpec) -> dict[str, Any]:
    """Trains and evaluates one run; returns its record whatever happens."""
    if spec.config.get("threads"):  # first, so the record's env names the count; older configs lack the key
        torch.set_num_threads(spec.config["threads"])
    record = new_record(spec)
    try:
        _run(spec, record)
    except Exception as err:  # a failing run is a row, never the end of the sweep
        if is_out_of_memory(err):
            record["status"], record["reason"] = "oom", f"out of memory: {describe_error(err)}"
        else:
            record["status"], record["reason"] = "error", describe_error(err)
    return record


def _run(spec: RunSpec, record: dict[str, Any]) -> None:
    config = spec.config
    if config.get("version") != CONFIG_VERSION:
        raise BenchError(f"run config version {config.get('version')!r}, expected {CONFIG_VERSION}")
    runtime = config.get("runtime", {})
    from methods import load_plugin

    for plugin in runtime.get("plugins", []):  # workers in other processes import them again
        load_plugin(plugin)
    dist = init_from_env(config["device"])
    device = rank_device(config["device"], dist)

    task = load_task(spec.task)
    reason = unsupported(task, config, str(device))
    if reason:
        record["status"], record["reason"] = "unsupported", reason
        return
    prepared = task.prepare_data(Path(runtime.get("data_dir") or default_data_dir()), dict(config["data"]))
    record["data"] = dict(prepared.data)
    planned = (config.get("data_source") or {}).get("fingerprint")
    if planned is not None and prepared.data["fingerprint"] != planned:
        raise BenchError(f"the data changed since this run was planned (fingerprint {prepared.data['fingerprint']}, "
                         f"planned {planned}); run the sweep again to plan it on the current data")
    splits = prepared.splits
    for name in ("train", "val", "test"):
        check_split(name, splits[name], task.head)
    baselines = {**class_baselines(splits["test"].targets, model_config(config).num_classes),
                 **task.shortcut_baselines(splits["test"], dict(config["data"]))}
    record["metrics"]["baselines"] = baselines

    seed_everything(spec.seed)
    from harness.training.model import EncoderClassifier

    model_cfg = model_config(config)
    model = EncoderClassifier(model_cfg).to(device)
    callbacks = []
    if config.get("bootstrap"):
        from harness.training.bootstrap import build_bootstrap

        callbacks = build_bootstrap(config["bootstrap"], model_cfg)

    path = checkpoint_path(spec)
    result = train(
        model, Splits(splits["train"], splits["val"], splits["test"]), train_config(config),
        head=task.head, seed=spec.seed, device=device, callbacks=callbacks, checkpoint_path=path,
        checkpoint_key=spec.config_hash, dist=dist, label=spec.key,
    )
    result.metrics.baselines = baselines
    record["status"], record["reason"] = result.status, result.reason
    record["metrics"], record["bootstrap"] = result.metrics.as_record(), result.events
    record["diagnostics"] = _diagnostics(model, config["train"].get("compile", "off"))
    record["flops"] = _flops(model, splits["test"], device, record)
    if path is not None and dist.is_primary:
        path.unlink(missing_ok=True)  # finished: the record now carries what the checkpoint held


def _diagnostics(model: torch.nn.Module, compile_mode: str = "off") -> dict[str, Any]:
    """Each attention core's diagnostics after the test evaluation, keyed by layer, whether the
    model's attention dropout reached every core, and which cores a compiled run ran eagerly."""
    found: dict[str, Any] = {}
    for index, core in enumerate(model.attention_cores()):
        values = core.diagnostics()
        if values:
            found[f"layer{index}"] = values
    rate = model.config.attention_dropout
    if rate:
        ignored = sorted({type(core).registry_name or type(core).__name__
                          for core in model.attention_cores() if not type(core).capabilities.attention_dropout})
        found["attention_dropout"] = {"rate": rate, "applied": not ignored, "not_applied_by": ignored}
    if compile_mode == "on":
        eager = sorted({type(core).registry_name or type(core).__name__
                        for core in model.attention_cores() if type(core).capabilities.data_dependent_shapes})
        found["compile"] = {"eager_methods": eager}
    return found


def keep_measured(spec: RunSpec, record: dict[str, Any]) -> None:
    """Fills a killed run's metrics with what its checkpoint (written at each evaluation) measured.

    The checkpoint is memory-mapped, so only the small metric values are read; one written for
    another config (key = config hash) is ignored. Test accuracy stays null: never measured.
    """
    path = checkpoint_path(spec)
    if path is None or not path.is_file():
        return
    try:
        saved = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
        if not isinstance(saved, dict) or saved.get("key") != spec.config_hash or not saved.get("history"):
            return
        state = TrainingState.from_checkpoint(saved)
    except Exception:  # a damaged checkpoint says nothing; the row keeps its empty metrics
        return
    record["metrics"] = state.measured().as_record()
    record["reason"] = f"{record['reason']}; metrics up to step {state.step} read from its checkpoint"


def _flops(model: torch.nn.Module, test_split: Any, device: torch.device, record: dict[str, Any]) -> Optional[dict]:
    """Per-example forward MACs of the final model over the test split (mean, min, max of what
    the attention cores executed); a counting failure is noted, not fatal."""
    try:
        from harness.measure.flops import count_split_macs

        model.eval()
        return count_split_macs(model, test_split, device)
    except Exception as err:
        record["diagnostics"]["flops_error"] = describe_error(err)
        return None
