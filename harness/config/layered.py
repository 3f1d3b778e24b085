"""Layered run configuration: typed defaults, task defaults, suite, a config file, then --set.

A resolved run config is a plain nested dict (JSON-ready) with the sections

    family  "lra" | "uniform"      which task default config family to start from
    device  "cpu" | "cuda[:N]"
    train   TrainConfig fields     (optimiser, schedule, budget)
    model   harness.training.model.ModelConfig fields
    data    task data params       (validated by the task's check_params)
    bootstrap  dict | None         (validated by harness.training.bootstrap)

plus identity keys (version, task, task_version, method, attention, seed) and a `runtime` section
(data_dir, plugins, suite, checkpoint_dir) that says where things are, not what is computed, and
is therefore left out of the config hash that keys resume.

Every layer is a nested dict checked against the typed fields: unknown keys are rejected naming
the key and the accepted ones, values of the wrong type are rejected naming the field.
"""

from __future__ import annotations

import dataclasses
import difflib
import hashlib
import json
import math
import typing
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, Optional, get_args, get_origin

from bench_common import BenchError
from bench_common.values import UNION_TYPES, check_value
from harness.training.train_config import TrainConfig, resolve_precision

# Bump when the meaning of a config key or of a record field changes: an output directory written
# under another version is refused instead of being silently mixed with new results.
CONFIG_VERSION = 2  # 2: eval_every null = steps // 10; measured MACs, baselines in records

# Top-level keys of a config layer and the type of each (sections are checked field by field).
TOP_LEVEL: dict[str, Any] = {
    "family": Literal["lra", "uniform"],
    "device": str,
    "train": TrainConfig,
    "model": "ModelConfig",
    "data": dict,
    "bootstrap": Optional[dict],
    # torch intra-op threads of the run; null = the planning process's count. Part of the run's
    # identity: CPU kernels sum in another order with another count, so results differ in the last
    # digits and, through training, in accuracy.
    "threads": Optional[int],
}


def _model_config_class() -> type:
    from harness.training.model import ModelConfig

    return ModelConfig


def _section_class(name: str) -> type:
    return TrainConfig if name == "train" else _model_config_class()


def _field_hints(cls: type) -> dict[str, Any]:
    hints = typing.get_type_hints(cls)
    return {f.name: hints[f.name] for f in dataclasses.fields(cls)}


def _unknown_key(where: str, key: str, accepted: list[str]) -> BenchError:
    close = difflib.get_close_matches(key, accepted, n=1, cutoff=0.6)
    hint = f" (did you mean '{close[0]}'?)" if close else ""
    return BenchError(f"{where}: unknown key '{key}'{hint}; accepted: {', '.join(sorted(accepted))}")


# --------------------------------------------------------------------------- value checking


def parse_text(path: str, text: str, hint: Any) -> Any:
    """A `--set` value (always a string) parsed by the type of the field it sets."""
    origin = get_origin(hint)
    lowered = text.strip().lower()
    if origin in UNION_TYPES:
        if lowered in ("none", "null"):
            return check_value(path, None, hint)
        inner = [a for a in get_args(hint) if a is not type(None)]
        return parse_text(path, text, inner[0] if len(inner) == 1 else Any)
    if hint is bool:
        if lowered not in ("true", "false"):
            raise BenchError(f"{path}: expected true or false, got {text!r}")
        return lowered == "true"
    if hint is int:
        try:
            return int(text)
        except ValueError:
            raise BenchError(f"{path}: expected an integer, got {text!r}") from None
    if hint is float:
        try:
            return float(text)
        except ValueError:
            raise BenchError(f"{path}: expected a number, got {text!r}") from None
    if hint is str or origin is Literal:
        return check_value(path, text, hint)
    if origin is tuple:
        items = _json_or_none(text)
        if not isinstance(items, list):
            items = [part for part in text.split(",")]
        args = get_args(hint)
        if len(items) != len(args):
            raise BenchError(f"{path}: expected {len(args)} comma-separated values, got {text!r}")
        return [parse_text(f"{path}[{i}]", str(v), a) for i, (v, a) in enumerate(zip(items, args))]
    if hint is dict or origin is dict:
        value = _json_or_none(text)
        if not isinstance(value, dict):
            raise BenchError(f"{path}: expected a JSON object such as {{\"key\": 1}}, got {text!r}")
        return value
    # Free-form values (task data params, method options, bootstrap): a JSON literal, else a string.
    value = _json_or_none(text)
    return text if value is None and lowered != "null" else value


def _json_or_none(text: str) -> Any:
    try:
        return json.loads(text)
    except ValueError:
        return None


# --------------------------------------------------------------------------- layers


def check_layer(layer: Any, where: str) -> dict[str, Any]:
    """A config layer (file, suite override) checked key by key; returns its normalised copy."""
    if not isinstance(layer, dict):
        raise BenchError(f"{where}: expected a mapping of config sections, got {type(layer).__name__}")
    checked: dict[str, Any] = {}
    for key, value in layer.items():
        if key not in TOP_LEVEL:
            raise _unknown_key(where, str(key), list(TOP_LEVEL))
        if key == "device":
            raise BenchError(DEVICE_BY_FLAG.format(where=f"{where}: device"))
        check_finite(f"{where}: {key}", value)
        if key in ("train", "model"):
            if not isinstance(value, dict):
                raise BenchError(f"{where}: section '{key}' must be a mapping, got {value!r}")
            hints = _field_hints(_section_class(key))
            section = {}
            for field_name, field_value in value.items():
                if field_name not in hints:
                    raise _unknown_key(f"{where}: {key}", str(field_name), list(hints))
                section[field_name] = check_value(f"{where}: {key}.{field_name}", field_value, hints[field_name])
            checked[key] = section
        else:
            checked[key] = check_value(f"{where}: {key}", value, TOP_LEVEL[key])
    return checked


def parse_set(assignment: str) -> dict[str, Any]:
    """`--set a.b=value` -> a one-key layer {a: {b: value}}, value typed by the field it sets."""
    layer = _parse_assignment(assignment)
    for key, value in flatten(layer).items():
        check_finite(f"--set {key}", value)
    return layer


def _parse_assignment(assignment: str) -> dict[str, Any]:
    if "=" not in assignment:
        raise BenchError(f"--set {assignment!r}: expected key=value, e.g. --set train.steps=100")
    key, text = assignment.split("=", 1)
    parts = key.strip().split(".")
    where = f"--set {key}"
    if not all(parts) or parts[0] not in TOP_LEVEL:
        raise _unknown_key("--set", parts[0], list(TOP_LEVEL))
    top = parts[0]
    if top == "device":
        raise BenchError(DEVICE_BY_FLAG.format(where=where))
    if top in ("family", "threads"):
        if len(parts) > 1:
            raise BenchError(f"{where}: '{top}' has no sub-keys")
        return {top: check_value(where, parse_text(where, text, TOP_LEVEL[top]), TOP_LEVEL[top])}
    if top in ("data", "bootstrap"):
        if len(parts) == 1:
            value = parse_text(where, text, TOP_LEVEL[top])
            return {top: check_value(where, value, TOP_LEVEL[top])}
        return {top: _nest(parts[1:], parse_text(where, text, Any))}
    # train / model: the field's type decides how the text is parsed.
    if len(parts) == 1:
        raise BenchError(f"{where}: name a field, e.g. --set {top}.<field>=value")
    hints = _field_hints(_section_class(top))
    field_name = parts[1]
    if field_name not in hints:
        raise _unknown_key(f"--set {top}", field_name, list(hints))
    hint = hints[field_name]
    if len(parts) == 2:
        return {top: {field_name: check_value(where, parse_text(where, text, hint), hint)}}
    if not (hint is dict or get_origin(hint) is dict):
        raise BenchError(f"{where}: {top}.{field_name} is not a mapping, it has no sub-keys")
    return {top: {field_name: _nest(parts[2:], parse_text(where, text, Any))}}


def parse_option_set(assignment: str, options: type, section: str) -> tuple[str, Any]:
    """`--set SECTION.name=value` (given without the prefix) for settings that are one flat
    dataclass (`efficiency`): (name, value), the text parsed and checked by the field's type, as
    `parse_set` does for train.* and model.*."""
    if "=" not in assignment:
        raise BenchError(f"--set {section}.{assignment}: expected {section}.KEY=VALUE, e.g. --set {section}.num_heads=4")
    name, text = assignment.split("=", 1)
    hints = _field_hints(options)
    if name not in hints:
        raise _unknown_key(f"--set {section}", name, list(hints))
    where = f"--set {section}.{name}"
    value = check_value(where, parse_text(where, text, hints[name]), hints[name])
    check_finite(where, value)
    return name, value


DEVICE_BY_FLAG = "{where}: the device is chosen by the --device flag (cpu, cuda or auto), not by a config key"


def check_finite(where: str, value: Any) -> None:
    """NaN and infinity are refused anywhere in a layer: no setting means them, and JSON cannot hold them."""
    if isinstance(value, float) and not math.isfinite(value):
        raise BenchError(f"{where}: expected a finite number, got {value}")
    if isinstance(value, dict):
        for key, item in value.items():
            check_finite(f"{where}.{key}", item)
    elif isinstance(value, (list, tuple)):
        for index, item in enumerate(value):
            check_finite(f"{where}[{index}]", item)


def _nest(parts: list[str], value: Any) -> dict[str, Any]:
    for part in reversed(parts):
        value = {part: value}
    return value


def merge(base: dict[str, Any], layer: dict[str, Any]) -> dict[str, Any]:
    """Deep merge: mappings merge key by key, every other value replaces."""
    out = dict(base)
    for key, value in layer.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = merge(out[key], value)
        else:
            out[key] = value
    return out


def load_config_file(path: Path) -> dict[str, Any]:
    """A --config file (JSON, YAML, TOML) as a checked layer; errors name the file and line."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as err:
        raise BenchError(f"--config {path}: cannot read it ({err})") from None
    suffix = path.suffix.lower()
    try:
        if suffix == ".json":
            data = json.loads(text)
        elif suffix in (".yaml", ".yml"):
            try:
                import yaml
            except ImportError:
                raise BenchError(f"--config {path}: YAML needs PyYAML (pip install pyyaml); or use .json/.toml") from None
            data = yaml.safe_load(text)
        elif suffix == ".toml":
            import tomllib

            data = tomllib.loads(text)
        else:
            raise BenchError(f"--config {path}: unknown format '{suffix}'; expected .json, .yaml, .yml or .toml")
    except BenchError:
        raise
    except json.JSONDecodeError as err:
        raise BenchError(f"{path}:{err.lineno}:{err.colno}: malformed JSON: {err.msg}") from None
    except Exception as err:  # YAML/TOML parse errors; each message carries its line
        mark = getattr(err, "problem_mark", None)
        line = f":{mark.line + 1}" if mark is not None else ""
        raise BenchError(f"{path}{line}: malformed {suffix[1:].upper()}: {err}") from None
    return check_layer(data, str(path))


# --------------------------------------------------------------------------- resolution


def default_layer(device: str) -> dict[str, Any]:
    """The typed defaults: every key a run config has, before any task or user layer."""
    return {
        "family": "lra",
        "device": device,
        # eval_every stays null here: it follows the budget (steps) that later layers choose.
        "train": {**check_layer({"train": dataclasses.asdict(TrainConfig())}, "defaults")["train"], "eval_every": None},
        "model": check_layer({"model": dataclasses.asdict(_model_config_class()())}, "defaults")["model"],
        "data": {},
        "bootstrap": None,
        "threads": None,
    }


def task_layer(task: Any, family: str, data: dict[str, Any]) -> dict[str, Any]:
    """What the task fixes for these data params (vocabulary, length, classes, head, padding) plus
    its `family` defaults. `data` are the resolved data params: they can change the shapes."""
    if family not in task.model_configs or family not in task.train_configs:
        raise BenchError(f"task '{task.name}' has no '{family}' config family; it has {sorted(task.model_configs)}")
    model = {"head": task.head, "pad_id": task.pad_id, **task.model_config(family, data)}
    layer = {"model": model, "train": dict(task.train_configs[family]), "data": dict(data)}
    return check_layer(layer, f"task '{task.name}' defaults ({family})")


def family_of(layers: list[dict[str, Any]]) -> str:
    family = "lra"
    for layer in layers:
        family = layer.get("family", family)
    return family


def finish(config: dict[str, Any]) -> dict[str, Any]:
    """Builds the typed objects once, so a bad combination fails before any run starts."""
    train = TrainConfig(**{**config["train"], "betas": tuple(config["train"]["betas"])})
    check_model_ranges(config["model"])
    _model_config_class()(**config["model"])
    config["train"] = check_layer({"train": dataclasses.asdict(train)}, "train")["train"]
    # The concrete precision, not null, so the record (and the config hash) say what ran.
    config["train"]["precision"] = resolve_precision(train.precision, str(config["device"]).split(":")[0])
    config["threads"] = resolve_threads(config.get("threads"))
    return config


def resolve_threads(threads: Optional[int]) -> int:
    """The torch thread count a run uses: as given, or the planning process's (OMP_NUM_THREADS)."""
    import torch

    if threads is None:
        return torch.get_num_threads()
    if threads < 1:
        raise BenchError(f"threads must be >= 1 (torch intra-op threads per run), got {threads}")
    return threads


# Model fields that count something (at least one) and the fields a task fixes as a minimum.
MODEL_COUNTS = ("vocab_size", "num_classes", "max_seq_len", "emb_dim", "qkv_dim", "mlp_dim", "num_layers", "num_heads")
TASK_MINIMUMS = ("vocab_size", "num_classes", "max_seq_len")


def check_model_ranges(model: dict[str, Any]) -> None:
    """Values the types allow but the model cannot use (e.g. num_heads=0, dropout=2)."""
    for name in MODEL_COUNTS:
        if model[name] < 1:
            raise BenchError(f"model.{name} must be >= 1, got {model[name]!r}")
    if not 0.0 <= model["dropout"] < 1.0:
        raise BenchError(f"model.dropout must be in [0, 1), got {model['dropout']!r}")


def check_task_fit(model: dict[str, Any], task_model: dict[str, Any], task_name: str) -> None:
    """An override may enlarge what the task fixes (length, vocabulary, classes), never shrink it:
    its inputs or labels would not fit, and every run would end in an error row."""
    for name in TASK_MINIMUMS:
        if model[name] < task_model[name]:
            raise BenchError(f"model.{name}={model[name]} is below what task '{task_name}' needs ({task_model[name]}); "
                             f"its data would not fit (leave it unset or use >= {task_model[name]})")


def train_config(config: dict[str, Any]) -> TrainConfig:
    return TrainConfig(**{**config["train"], "betas": tuple(config["train"]["betas"])})


def model_config(config: dict[str, Any]):
    return _model_config_class()(**config["model"])


def flatten(config: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """{'train': {'steps': 20}} -> {'train.steps': 20}: the dotted keys errors name."""
    flat: dict[str, Any] = {}
    for key, value in config.items():
        path = f"{prefix}{key}"
        if isinstance(value, dict) and value:
            flat.update(flatten(value, f"{path}."))
        else:
            flat[path] = value
    return flat


# Keys added after CONFIG_VERSION 2, left out of the hash while they hold their default (the
# behaviour before they existed), so records made before them keep their identity.
HASH_NEUTRAL_DEFAULTS: dict[tuple[str, str], Any] = {("model", "short_conv"): 0, ("train", "compile"): "off"}


def config_hash(config: dict[str, Any]) -> str:
    """Stable digest of everything that can change a run's result (the runtime section is not)."""
    payload = {k: v for k, v in config.items() if k != "runtime"}
    for (section, key), default in HASH_NEUTRAL_DEFAULTS.items():
        if isinstance(payload.get(section), dict) and payload[section].get(key, default) == default:
            payload[section] = {k: v for k, v in payload[section].items() if k != key}
    blob = json.dumps(payload, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]
