"""Two-level bootstrapped training of Treeformer models, as training-loop callbacks.

Level 1 (model): train with a dense warm-up attention (`full` by default) first, then switch the
chosen layers to tree attention, keeping every weight. Level 2 (tree): train the trees with the
dense-gradient TC form first, then continue with TF, optionally growing the tree height stage by
stage (a grown tree starts from its parent hyperplanes, `RoutingTree.grown`). See docs/treeformer.md.

The run config's `bootstrap` section:

    {"layers": null,                        # null = all layers, or a list of layer indices
     "warmup_attention": "full",            # attention from step 0 until the first stage; null = none
     "stages": [{"at_step": 200, "attention": "treeformer-tc", "options": {"height": 4}},
                {"at_step": 600, "attention": "treeformer-tf", "options": {"height": 5}}]}

No section, or empty `stages`, means no bootstrap. The loop calls `on_step_start(step, model)`
before every step; a returned dict is an event for the run record's "bootstrap" list and means
the model's attention changed (the loop then gives the new parameters to the optimizer).
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Any, Callable, Optional

import torch
from torch import nn

from bench_common import BenchError
from bench_common.values import check_fields
from harness.training.model import ModelConfig, share_parameters
from methods import attention_options, create_attention, get_attention_class
from methods.registry import validate_attention_options
from methods.treeformer import TreeAttention

@dataclass(frozen=True)
class Stage:
    at_step: int
    attention: str
    options: Optional[dict[str, Any]] = field(default_factory=dict)  # null in a section: no options


@dataclass(frozen=True)
class Section:
    """The `bootstrap` section as written: the types every key must have."""

    layers: Optional[list[int]] = None
    warmup_attention: Optional[str] = None  # absent: "full" when there are stages
    stages: Optional[list[dict]] = None


@dataclass(frozen=True)
class BootstrapPlan:
    layers: Optional[tuple[int, ...]]  # None = every layer
    warmup_attention: Optional[str]
    stages: tuple[Stage, ...]


def validate_bootstrap(section: Optional[dict]) -> Optional[BootstrapPlan]:
    """Checks a `bootstrap` section before training; returns its plan, or None for no bootstrap.

    Keys and types are checked by `check_fields`, as every config value; what follows are the
    rules between values (order of stages, warm-up, heights).
    """
    if section is None:
        return None
    checked = check_fields("bootstrap", Section, section)
    stages_raw = checked.get("stages") or []
    if not stages_raw:
        if checked.get("warmup_attention") is not None:
            raise BenchError("bootstrap.warmup_attention is set but bootstrap.stages is empty: nothing to switch to")
        return None
    warmup = checked.get("warmup_attention", "full")
    if warmup is not None:
        _within("bootstrap.warmup_attention", get_attention_class, warmup)  # suggests close names
    layers = _validate_layers(checked.get("layers"))
    stages: list[Stage] = []
    for index, raw in enumerate(stages_raw):
        where = f"bootstrap.stages[{index}]"
        stage = Stage(**check_fields(where, Stage, raw))
        if stage.at_step < 0:
            raise BenchError(f"{where}.at_step: expected an integer >= 0, got {stage.at_step!r}")
        if stages and stage.at_step <= stages[-1].at_step:
            raise BenchError(
                f"{where}.at_step={stage.at_step} must be greater than the previous stage's at_step={stages[-1].at_step}"
            )
        if warmup is not None and stage.at_step == 0:
            raise BenchError(f"{where}.at_step=0 leaves no warm-up; use at_step >= 1 or warmup_attention null")
        options = _within(where, validate_attention_options, stage.attention, stage.options or {})
        stages.append(Stage(stage.at_step, stage.attention, options))
    _check_heights_grow(stages)
    return BootstrapPlan(layers, warmup, tuple(stages))


def build_bootstrap(section: Optional[dict], model_config: ModelConfig) -> list["BootstrapCallback"]:
    """The callbacks for a run: none without bootstrap, else one that applies the plan.

    Every stage's core is built once here on the model's shapes, so bad options (a height too
    large for the sequence length) fail before training starts.
    """
    plan = validate_bootstrap(section)
    if plan is None:
        return []
    layers = list(range(model_config.num_layers)) if plan.layers is None else list(plan.layers)
    for index in layers:
        if index >= model_config.num_layers:
            raise BenchError(f"bootstrap.layers: layer {index} out of range 0..{model_config.num_layers - 1}")
    specs = ([(plan.warmup_attention, {})] if plan.warmup_attention else []) + [(s.attention, s.options) for s in plan.stages]
    for name, options in specs:
        create_attention(
            name,
            num_heads=model_config.num_heads,
            head_dim=model_config.head_dim,
            max_seq_len=model_config.encoded_length,
            **options,
        )
    return [BootstrapCallback(plan, layers)]


class BootstrapCallback:
    """Switches `layers` to the stage due at each step; idempotent, and resumes at any step."""

    def __init__(self, plan: BootstrapPlan, layers: list[int]):
        self.plan = plan
        self.layers = layers
        self.current: Optional[int] = None  # stage index applied; -1 = warm-up; None = nothing yet
        # Of the last switch: grown parameters and how their optimizer state maps (`sync_optimizer`).
        self.replaced: dict[nn.Parameter, tuple[nn.Parameter, Optional[torch.Tensor]]] = {}

    def due(self, step: int) -> int:
        """Index of the last stage with at_step <= step, or -1 (warm-up) before the first."""
        due = -1
        for index, stage in enumerate(self.plan.stages):
            if stage.at_step <= step:
                due = index
        return due

    def on_step_start(self, step: int, model: nn.Module) -> Optional[dict]:
        due = self.due(step)
        if due == self.current:
            return None
        self.current = due
        self.replaced = {}
        if due == -1:
            if self.plan.warmup_attention is None:
                return None
            return switch_attention(model, self.layers, self.plan.warmup_attention, {}, step, self.replaced)
        stage = self.plan.stages[due]
        return switch_attention(model, self.layers, stage.attention, stage.options, step, self.replaced)


def switch_attention(model: nn.Module, layers: list[int], name: str, options: dict, step: int,
                     replaced: Optional[dict] = None) -> dict:
    """Swaps the cores of `layers` keeping all weights; grows trees whose height increased.

    `replaced` receives the grown parameters and how their optimizer state maps (`carry_tree`).
    """
    before = model.attention_cores()
    old_names = sorted({before[i].registry_name for i in layers})
    model.set_attention(layers, name, options)
    after = model.attention_cores()
    trees = sorted({carry_tree(before[i], after[i], replaced) for i in layers})
    and_bias = sorted({label for i in layers if (label := and_bias_change(before[i], after[i]))})
    event = {
        "step": step,
        "layers": list(layers),
        "from": old_names[0] if len(old_names) == 1 else old_names,
        "to": name,
        "options": dict(options),
        "tree": trees[0] if len(trees) == 1 else trees,
    }
    if and_bias:
        event["and_bias"] = and_bias[0] if len(and_bias) == 1 else and_bias
    return event


def carry_tree(old: nn.Module, new: nn.Module, replaced: Optional[dict] = None) -> str:
    """How `new` got its tree: 'carried' (same shape, by set_attention), 'grown', 'new' or 'none'.

    A carried tree keeps its Parameter objects (the optimizer keeps their state). A grown tree is a
    copy of the old one grown level by level (`RoutingTree.grow_`); `replaced` receives, for each
    old parameter, its grown copy and the old index each entry copies, so the optimizer state
    (AdamW's moments) follows the hyperplanes: a new node starts with its parent's moments, as it
    starts with its parent's hyperplane. The over-parameter layers restart at identity: their state
    is reset (None). The AND bias follows `and_bias_change`.
    """
    if not isinstance(new, TreeAttention):
        return "none"
    if not isinstance(old, TreeAttention):
        return "new"
    same_overparam = len(old.tree.overparam_weights) == len(new.tree.overparam_weights)
    if old.height == new.height and same_overparam:
        return "carried"
    if old.height < new.height and same_overparam:
        tree, total = copy.deepcopy(old.tree), {}
        while tree.height < new.height:
            for name, sources in tree.grow_().items():  # compose: new index -> index before growing
                total[name] = sources if name not in total else total[name][sources]
        for param in tree.parameters():
            param.grad = None  # the old shape's
        new.tree.load_state_dict({k: v for k, v in tree.state_dict().items() if k in new.tree.state_dict()},
                                 strict=False)  # buffers; an AND bias the new stage lacks is dropped
        for name in share_parameters(tree, new.tree):
            if replaced is not None:
                replaced[old.tree.get_parameter(name)] = (new.tree.get_parameter(name), total.get(name))
        return "grown"
    return "new"


def and_bias_change(old: nn.Module, new: nn.Module) -> Optional[str]:
    """What a switch did to a tree's AND bias, when the stages disagree: None if they agree.

    'dropped': the new stage has none; the learned bias is discarded and routing becomes the plain
    walk (the stage asked for a bias-free tree; a bias that overruled the walk moves those tokens).
    'new': the new stage adds one, starting at zero, which changes no leaf (the walked leaf scores
    h·mean|z|, every other leaf at most (h-2)·mean|z|), so the carried routing is kept exactly.
    """
    if not (isinstance(old, TreeAttention) and isinstance(new, TreeAttention)):
        return None
    before, after = old.tree.and_bias is not None, new.tree.and_bias is not None
    if before == after:
        return None
    return "dropped" if before else "new"


def _within(where: str, check: Callable[..., Any], *args: Any) -> Any:
    """`check(*args)`, its BenchError prefixed by where in the section the checked value sits."""
    try:
        return check(*args)
    except BenchError as err:
        raise BenchError(f"{where}: {err}") from None


def _validate_layers(layers: Optional[list[int]]) -> Optional[tuple[int, ...]]:
    if layers is None:
        return None
    if not layers or any(i < 0 for i in layers):
        raise BenchError(f"bootstrap.layers: expected null or a non-empty list of layer indices >= 0, got {layers!r}")
    if len(set(layers)) != len(layers):
        raise BenchError(f"bootstrap.layers: duplicate layer index in {layers!r}")
    return tuple(sorted(layers))


def _check_heights_grow(stages: list[Stage]) -> None:
    """Tree height may grow from stage to stage (trees are grown), never shrink."""
    previous = None
    for index, stage in enumerate(stages):
        if not issubclass(get_attention_class(stage.attention), TreeAttention):
            continue
        height = stage.options.get("height", attention_options(stage.attention).get("height"))
        if previous is not None and height < previous:
            raise BenchError(
                f"bootstrap.stages[{index}].options.height={height} is lower than the previous tree "
                f"stage's height={previous}; heights may only grow"
            )
        previous = height
