"""Matched cost (the paper's claim 2, "at similar FLOPs"): each method's declared cost option
(`AttentionMethod.cost_option`: Linformer's k, Performer's number of random features, ...) chosen per
task so that its attention-core MACs equal a reference method's.

The reference (Treeformer TF by default in the `matched` suite) is measured, not taken from its
formula: the run config's model is built with the reference run's seed, at initialisation, and its
attention cores' executed MACs are averaged over the task's test examples (as records count them,
harness/measure/flops.py `count_split_macs`). At initialisation, because the matching must be
known when runs are resolved: before any run starts, so every run is independent (any executor,
any order, resume by config hash) and a bad setting is a usage error. The trained tree's cost
differs (a learned tree is less balanced); the reference run's record shows it beside the
target, so the drift is visible.

The matched option is found by bisection on the method's own `macs(n)` (monotone in k and in
the feature count) times the number of core calls per example; a match further than 15% from the
target (k cannot exceed the sequence length) is refused with a one-line error.
"""

from __future__ import annotations

import copy
import sys
from pathlib import Path
from typing import Any, Callable, Optional

import torch

from bench_common import BenchError
from harness.config import layered as cfg
from harness.sweep.records import RunSpec
from methods.base import CostOption

TOLERANCE = 0.15
MEASURED_EXAMPLES = 64  # test examples the reference is averaged over (the record counts them all)


def measure_reference_macs(spec: RunSpec, data_dir: Path) -> float:
    """Mean attention-core MACs per test example of `spec`'s model at initialisation (seeded as the run)."""
    from harness.measure.flops import count_split_macs
    from harness.sweep import runner
    from harness.training.model import EncoderClassifier

    task = runner.load_task(spec.task)
    test = task.prepare(Path(data_dir), dict(spec.config["data"]))["test"]
    runner.seed_everything(spec.seed)
    model = EncoderClassifier(cfg.model_config(spec.config))
    return float(count_split_macs(model, test, torch.device("cpu"), MEASURED_EXAMPLES)["attention_core_macs"])


def core_calls_per_example(config: dict[str, Any]) -> int:
    """How many times one example runs an attention core: once per layer, twice with a dual head."""
    model = cfg.model_config(config)
    return model.num_layers * (2 if model.head == "dual" else 1)


def solve_option(config: dict[str, Any], target_macs: float) -> tuple[int, float]:
    """(value of the method's cost option, the MACs per example it gives) closest to target_macs."""
    from methods import create_attention

    model = cfg.model_config(config)
    name, cost = model.attention, cost_option(model.attention)
    key = cost.name
    n, calls = model.encoded_length, core_calls_per_example(config)

    def macs(value: int) -> float:
        options = {**model.attention_options, key: value}
        core = create_attention(name, num_heads=model.num_heads, head_dim=model.head_dim, max_seq_len=n, **options)
        return calls * core.macs(n)

    low, high = cost.minimum, cost.maximum(n)
    while high - low > 1:  # invariant: macs(low) <= target or low == 1; macs(high) >= target or high is the cap
        middle = (low + high) // 2
        low, high = (middle, high) if macs(middle) <= target_macs else (low, middle)
    value = min((low, high), key=lambda v: abs(macs(v) - target_macs))
    achieved = macs(value)
    if abs(achieved - target_macs) > TOLERANCE * target_macs:
        raise BenchError(
            f"--match-macs: {name} on task '{config['task']}' cannot match {target_macs:.0f} MACs within "
            f"{TOLERANCE:.0%}: the closest, {key}={value}, gives {achieved:.0f}"
        )
    return value, achieved


def cost_option(method: str) -> Optional[CostOption]:
    """The option a registered method declares as setting its cost, or None."""
    from methods import get_attention_class

    return get_attention_class(method).cost_option


def match_specs(specs: list[RunSpec], reference: str, data_dir: Path,
                reference_spec: Callable[[str], RunSpec]) -> list[RunSpec]:
    """The specs with each method's declared cost option solved per task against `reference`'s
    measured MACs; the reference and methods without a cost option unchanged. `reference_spec(task)`
    resolves the reference run."""
    targets: dict[str, float] = {}
    matched = []
    for spec in specs:
        cost = cost_option(spec.config["model"]["attention"])
        if cost is None or spec.method == reference:
            matched.append(spec)
            continue
        if spec.task not in targets:
            targets[spec.task] = measure_reference_macs(reference_spec(spec.task), data_dir)
        config = copy.deepcopy(spec.config)
        value, achieved = solve_option(config, targets[spec.task])
        config["model"]["attention_options"][cost.name] = value
        config["runtime"]["match_macs"] = {"reference": reference, "target_macs": targets[spec.task],
                                           "matched_macs": achieved}
        print(f"{spec.key}: {cost.name}={value} gives {achieved:.0f} "
              f"attention-core MACs per example; {reference} measures {targets[spec.task]:.0f}", file=sys.stderr)
        matched.append(RunSpec(method=spec.method, task=spec.task, seed=spec.seed, config=config,
                               config_hash=cfg.config_hash(config)))
    return matched
