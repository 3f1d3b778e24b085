"""Matched cost (the paper's claim 2, "at similar FLOPs"): each method's declared cost option
(`AttentionMethod.cost_option`: Linformer's k, Performer's number of random features, ...) chosen so
that its attention-core MACs equal what a reference method's *trained* model executed.

Two passes. The reference runs first (Treeformer TF in the `matched` suite); its record carries the
attention-core MACs its trained cores executed, averaged over the task's test split (a learned tree
spends more than at initialisation, so matching at step 0 would handicap the others). Then each
matched run of the same task and seed gets the option value whose MACs are closest to that figure,
and runs. The solved value is part of the run's config and hash, and it follows from the reference
record alone, so a rerun resolves the same runs and resumes them; the record says which reference
run it matched (`runtime.match_macs`).

The option is found by bisection on the method's own `macs(n)` (monotone in the option) times the
number of core calls per example; a match further than 15% from the target (k cannot exceed the
sequence length) is refused with a one-line error.
"""

from __future__ import annotations

import copy
import sys
from pathlib import Path
from typing import Any, Optional

from bench_common import BenchError
from harness.config import layered as cfg
from harness.sweep.records import RunSpec, read_record_if_valid, record_path
from methods.base import CostOption

TOLERANCE = 0.15


def cost_option(method: str) -> Optional[CostOption]:
    """The option a registered method declares as setting its cost, or None."""
    from methods import get_attention_class

    return get_attention_class(method).cost_option


def needs_matching(spec: RunSpec, reference: str) -> bool:
    """Whether `spec` waits for the reference: a method with a cost option that is not the reference."""
    return spec.method != reference and cost_option(spec.config["model"]["attention"]) is not None


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
    while high - low > 1:  # invariant: macs(low) <= target or low == minimum; macs(high) >= target or high is the cap
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


def reference_target(out: Path, reference: str, task: str, seed: int) -> tuple[Optional[float], str]:
    """(the trained reference's executed attention-core MACs per test example, where it was read),
    or (None, why not yet): the reference has not run, failed, or its record lacks the count."""
    path = record_path(out, task, reference, seed)
    record = read_record_if_valid(path)
    if record is None:
        return None, f"waits for the reference run {task}/{reference}/seed{seed}"
    macs = (record.get("flops") or {}).get("attention_core_macs")
    if record["status"] != "ok" or macs is None:
        return None, (f"reference run {task}/{reference}/seed{seed} ended '{record['status']}'"
                      f"{'' if macs is not None else ' without a MAC count'}: nothing to match")
    return float(macs), str(path)


def match_to_reference(spec: RunSpec, reference: str, out: Path) -> tuple[Optional[RunSpec], str]:
    """`spec` with its cost option solved against its reference run (same task and seed), or
    (None, why it cannot be solved yet)."""
    target, source = reference_target(out, reference, spec.task, spec.seed)
    if target is None:
        return None, source
    config = copy.deepcopy(spec.config)
    option = cost_option(config["model"]["attention"]).name
    value, achieved = solve_option(config, target)
    config["model"]["attention_options"][option] = value
    config["runtime"]["match_macs"] = {
        "reference": reference, "reference_record": source, "target_macs": target, "matched_macs": achieved,
        "target": "attention-core MACs the trained reference executed, mean over the test split",
    }
    print(f"{spec.key}: {option}={value} gives {achieved:.0f} attention-core MACs per example; "
          f"the trained {reference} (seed {spec.seed}) executed {target:.0f}", file=sys.stderr)
    return RunSpec(method=spec.method, task=spec.task, seed=spec.seed, config=config,
                   config_hash=cfg.config_hash(config)), source
