"""Run records: one self-describing JSON file per run, written atomically, read with checks.

Layout: `<out>/records/<task>/<method>/seed<seed>.json`, plus `<out>/config.json` with every
resolved run config of the directory. Schema (docs/records.md):
{"schema", "method", "attention", "task", "task_version", "seed", "status", "reason", "metrics",
 "flops", "diagnostics", "bootstrap", "suite", "config", "config_hash", "env", "data"}.
`data` names the exact data a run used: {"source", "root", "fingerprint", "sizes": {train, val,
test} or null before the data was read, plus loader counts such as "empty_images_skipped"}.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from dataclasses import dataclass, field
from typing import Any, Iterator, Optional

from bench_common import BenchError
from bench_common.files import write_json_atomic
from harness.config.layered import CONFIG_VERSION, config_hash
from harness.measure.env import environment
from harness.training.metrics import METRIC_KEYS, RunMetrics

SCHEMA = 1
STATUSES = ("ok", "diverged", "oom", "timeout", "error", "unsupported")
FAILED = ("diverged", "oom", "timeout", "error")
# Failures of the circumstances (limits, memory, a crash), not results of the method: a rerun retries
# them. `diverged` and `unsupported` say something about the method and stay done unless asked.
RETRIED = ("oom", "timeout", "error")
RECORD_KEYS = ("schema", "method", "attention", "task", "task_version", "seed", "status", "reason",
               "metrics", "flops", "diagnostics", "bootstrap", "suite", "config", "config_hash", "env", "data")
# Keys a record written before they existed may lack (the committed results/ predate `data`).
LATER_KEYS = ("data",)


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


def new_record(spec: RunSpec) -> dict[str, Any]:
    config = spec.config
    return {
        "schema": SCHEMA,
        "method": spec.method,
        "attention": config.get("attention"),
        "task": spec.task,
        "task_version": config.get("task_version"),
        "seed": spec.seed,
        "status": "error",
        "reason": None,
        "metrics": RunMetrics().as_record(),
        "flops": None,
        "diagnostics": {},
        "bootstrap": [],
        "suite": config.get("runtime", {}).get("suite"),
        "config": config,
        "config_hash": spec.config_hash,
        "env": environment(config.get("device", "cpu"), config.get("runtime", {}).get("command")),
        "data": planned_data(config),
    }


def planned_data(config: dict[str, Any]) -> dict[str, Any]:
    """The data block as planned (source, root, fingerprint); a run that reads its data replaces it."""
    source = config.get("data_source") or {}
    return {"source": source.get("source"), "root": config.get("runtime", {}).get("data_root"),
            "fingerprint": source.get("fingerprint"), "sizes": None}


def failure_record(spec: RunSpec, status: str, reason: str) -> Record:
    """The row of a run that ended without a record of its own (killed, timed out, crashed).

    Built by `new_record`, so it has exactly a normal record's keys; `env`
    describes the driver, the only machine known to have seen the run.
    """
    record = new_record(spec)
    record["status"], record["reason"] = status, reason
    return record


def attempt_summary(record: Record, path: Path) -> dict[str, Any]:
    """What a replaced record leaves in its successor's `previous_attempts` (oldest first)."""
    from datetime import datetime, timezone

    finished = datetime.fromtimestamp(Path(path).stat().st_mtime, tz=timezone.utc)
    return {"status": record["status"], "reason": record["reason"], "config_hash": record["config_hash"],
            "steps": record["metrics"].get("steps"), "finished_at": finished.isoformat(timespec="seconds"),
            "env": record["env"]}


def previous_attempts(record: Record, path: Path) -> list[dict[str, Any]]:
    """The history a rerun of `record` carries: the record's own history, then the record."""
    return [*record.get("previous_attempts", []), attempt_summary(record, path)]


def record_path(out_dir: Path, task: str, method: str, seed: int) -> Path:
    return Path(out_dir) / "records" / task / method / f"seed{seed}.json"


def process_alive(pid: int) -> bool:
    """Whether process `pid` runs on this machine: a temporary file named after its writer's pid is
    the live writer's, not debris, while this holds."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # someone else's live process
    return True


def validate_record(record: Any, where: str) -> dict[str, Any]:
    """Checks the keys and value kinds every reader relies on; one-line error naming the file."""
    if not isinstance(record, dict):
        raise BenchError(f"{where}: a record must be a JSON object")
    if record.get("schema") != SCHEMA:
        raise BenchError(f"{where}: record schema {record.get('schema')!r}, this version reads schema {SCHEMA}")
    missing = [key for key in RECORD_KEYS if key not in record and key not in LATER_KEYS]
    if missing:
        raise BenchError(f"{where}: record lacks key(s) {', '.join(missing)}")
    if record["status"] not in STATUSES:
        raise BenchError(f"{where}: status {record['status']!r} is not one of {', '.join(STATUSES)}")
    metrics = record["metrics"]
    if not isinstance(metrics, dict) or any(key not in metrics for key in METRIC_KEYS):
        raise BenchError(f"{where}: metrics must hold {', '.join(METRIC_KEYS)}")
    for key in ("val_accuracy", "test_accuracy"):
        value = metrics[key]
        if value is not None and not (isinstance(value, (int, float)) and 0.0 <= value <= 1.0):
            raise BenchError(f"{where}: metrics.{key} must be a fraction in [0, 1] or null, got {value!r}")
    baselines = metrics.get("baselines")
    if baselines is not None and not (
        isinstance(baselines, dict)
        and all(isinstance(baselines.get(k), (int, float)) and 0.0 <= baselines[k] <= 1.0 for k in ("majority", "chance"))
    ):
        raise BenchError(f"{where}: metrics.baselines must be {{'majority': fraction, 'chance': fraction}} or null")
    if metrics.get("still_learning") not in (None, True, False):
        raise BenchError(f"{where}: metrics.still_learning must be true, false or null")
    if not isinstance(record["config"], dict):
        raise BenchError(f"{where}: config must be an object")
    return record


def hash_matches_config(record: dict[str, Any]) -> bool:
    """Whether the record's config_hash is the hash of its config (false once the config is edited)."""
    return config_hash(record["config"]) == record["config_hash"]


def write_record(out_dir: Path, record: dict[str, Any]) -> Path:
    path = record_path(out_dir, record["task"], record["method"], record["seed"])
    validate_record(record, str(path))
    write_json_atomic(path, record)
    return path


def read_record(path: Path) -> dict[str, Any]:
    """A record file, checked; any damage is a one-line BenchError naming the file."""
    path = Path(path)
    try:
        data = json.loads(path.read_bytes().decode("utf-8"))
    except (OSError, UnicodeDecodeError) as err:
        raise BenchError(f"{path}: cannot read record ({type(err).__name__})") from None
    except json.JSONDecodeError as err:
        raise BenchError(f"{path}:{err.lineno}: malformed record JSON: {err.msg}") from None
    return validate_record(data, str(path))


def read_record_if_valid(path: Path) -> Optional[dict[str, Any]]:
    """The record at `path`, or None if absent or damaged (then the run is simply redone)."""
    try:
        return read_record(path) if Path(path).exists() else None
    except BenchError:
        return None


def iter_record_paths(out_dir: Path) -> Iterator[Path]:
    yield from sorted((Path(out_dir) / "records").glob("*/*/seed*.json"))


def check_output_version(out_dir: Path) -> None:
    """Refuses a directory written under another config version or record schema (nothing is touched)."""
    out_dir = Path(out_dir)
    config_file = out_dir / "config.json"
    if config_file.exists():
        try:
            version = json.loads(config_file.read_text(encoding="utf-8")).get("version")
        except (ValueError, OSError, AttributeError):
            raise BenchError(f"{config_file}: unreadable; is {out_dir} an output directory of this tool?") from None
        if version != CONFIG_VERSION:
            raise BenchError(
                f"{out_dir} holds results of config version {version!r}, this is version {CONFIG_VERSION}; "
                f"choose another --out"
            )
    for path in iter_record_paths(out_dir):
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (ValueError, OSError):
            continue  # a damaged record is redone by its run, it says nothing about the version
        schema = data.get("schema") if isinstance(data, dict) else None
        version = (data.get("config") or {}).get("version") if isinstance(data, dict) else None
        if schema != SCHEMA or version != CONFIG_VERSION:
            raise BenchError(
                f"{path}: written by record schema {schema!r} / config version {version!r}, this is "
                f"schema {SCHEMA} / version {CONFIG_VERSION}; choose another --out"
            )


def update_config_file(out_dir: Path, configs: dict[str, dict[str, Any]]) -> None:
    """Adds this sweep's resolved run configs to `<out>/config.json` (keyed task/method/seed)."""
    path = Path(out_dir) / "config.json"
    runs: dict[str, Any] = {}
    if path.exists():
        try:
            runs = json.loads(path.read_text(encoding="utf-8")).get("runs", {})
        except (ValueError, OSError, AttributeError):
            runs = {}
    runs.update(configs)
    write_json_atomic(path, {"version": CONFIG_VERSION, "runs": dict(sorted(runs.items()))})
