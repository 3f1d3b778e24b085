"""Keeps an optimizer in step with a model whose attention cores were swapped or whose trees grew.

A stage switch (bootstrap) may drop parameters (the old core's), add new ones, keep some (the same
Parameter objects: their state stays) and replace some by a grown copy (a tree one level deeper).
The optimizer must then forget the dropped ones (param groups and state), give the new ones a
group, and move the per-entry state (AdamW's exp_avg, exp_avg_sq) of a replaced parameter to its
copy, entry by entry, or reset it. Grown trees are copies, not the old Parameters resized in place:
a resized leaf would meet its old shape in autograd's cached gradient accumulator while the last
step's graph is alive. The result depends only on the model and the switch, so replaying the
switches on resume rebuilds the same param group layout the checkpoint's optimizer state was saved
with.
"""

from __future__ import annotations

from typing import Mapping, Optional

import torch
from torch import nn

# Old parameter -> (its replacement, the old index along dim 1 of each of the replacement's entries,
# or None to reset the state).
Replacements = Mapping[nn.Parameter, tuple[nn.Parameter, Optional[torch.Tensor]]]


def sync_optimizer(optimizer: torch.optim.Optimizer, model: nn.Module,
                   replaced: Optional[Replacements] = None) -> dict:
    """Puts each replacement in its old parameter's place (state moved, `replaced`), drops
    parameters the model no longer holds, resets state that no longer fits its parameter, and gives
    new parameters one new group. Returns what it did, as counts.
    """
    replaced = replaced or {}
    carried = reset = 0
    for group in optimizer.param_groups:
        for index, param in enumerate(group["params"]):
            if param not in replaced:
                continue
            new, sources = replaced[param]
            group["params"][index] = new
            state = optimizer.state.pop(param, None)
            if state and sources is not None:
                optimizer.state[new] = {key: _select(value, new, sources) for key, value in state.items()}
                carried += 1
            elif state:
                reset += 1

    present = {id(p) for p in model.parameters()}
    dropped = 0
    for group in optimizer.param_groups:
        for param in group["params"]:
            if id(param) not in present:
                optimizer.state.pop(param, None)
                dropped += 1
        group["params"] = [p for p in group["params"] if id(p) in present]
    optimizer.param_groups[:] = [group for group in optimizer.param_groups if group["params"]]

    for param, state in list(optimizer.state.items()):
        if any(_per_entry(value) and value.shape != param.shape for value in state.values()):
            del optimizer.state[param]  # never step with moments of another shape
            reset += 1

    known = {id(p) for group in optimizer.param_groups for p in group["params"]}
    new_params = [p for p in model.parameters() if id(p) not in known and p.requires_grad]
    if new_params:
        optimizer.add_param_group({"params": new_params})
    return {"added": len(new_params), "dropped": dropped, "carried": carried, "reset": reset}


def _per_entry(value) -> bool:
    """State with one entry per parameter entry (moments), as opposed to a scalar step count."""
    return torch.is_tensor(value) and value.dim() > 0


def _select(value, param: nn.Parameter, sources: torch.Tensor):
    """The per-entry state of each new entry: that of the old entry it copies (dim 1)."""
    if not _per_entry(value):
        return value
    selected = value.index_select(1, sources.to(value.device))
    if selected.shape != param.shape:
        raise ValueError(f"optimizer state of shape {tuple(value.shape)} reindexed to {tuple(selected.shape)}, "
                         f"the parameter has {tuple(param.shape)}")
    return selected
