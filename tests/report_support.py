"""Records as a sweep writes them (resolved config, its hash, a measured training), for report tests."""

from pathlib import Path

from harness.config.layered import CONFIG_VERSION, config_hash
from harness.sweep.records import RunSpec, new_record, write_record

TEMPLATE = new_record(RunSpec(method="full", task="listops", seed=0))  # the schema's keys, one env look-up


def add_run(out: Path, task: str, method: str, seed: int) -> Path:
    """Writes the record of one ok run; distinct runs get distinct accuracies and timings."""
    config = {"version": CONFIG_VERSION, "task": task, "method": method, "attention": method, "seed": seed,
              "train": {"steps": 20}, "runtime": {"suite": "quick"}}
    record = {**TEMPLATE, "task": task, "method": method, "attention": method, "seed": seed, "status": "ok",
              "config": config, "config_hash": config_hash(config)}
    salt = sum(map(ord, f"{task}{method}")) / 1000 + seed
    record["metrics"] = {**TEMPLATE["metrics"], "test_accuracy": 0.5 + seed / 100, "val_accuracy": 0.5,
                         "best_step": 20, "steps": 20, "train_seconds": 3.0 + salt,
                         "history": [{"step": s, "train_loss": 1 / s, "val_accuracy": 0.5} for s in (10, 20)]}
    record["flops"] = {"unit": "MACs", "attention_core_macs": 1000 * len(method), "attention_algorithmic_macs": 1000,
                       "attention_layer_macs": 2000, "total_macs": 5000, "unsupported_ops": {}}
    return write_record(out, record)
