"""The one training loop, for every task, head and method.

Read top to bottom: `train` builds AdamW, resumes from a checkpoint when there is one (`resume`),
then for each step runs the callbacks (`run_callbacks`), sets the learning rate, takes the step's
batch and does forward, backward, clipping and the update (`take_step`); every `eval_every` steps
it measures validation accuracy, keeps the best state, writes a checkpoint and checks early
stopping. At the end the best state (never the last) is loaded and tested (`final_test`).
Divergence, out-of-memory and the time limit end the run with that status and keep what was
measured. What carries from step to step, and what a checkpoint holds, is a `TrainingState`; what
the run measured is a `RunMetrics`. With `train.compile=on` the steps call the model through
torch.compile (`compiling`), and the time torch spends compiling is counted apart from the steps'.
"""

from __future__ import annotations

import dataclasses
import math
import resource
import sys
import time
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional, Protocol, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from bench_common import BenchError, first_line
from harness.training.checkpoints import load_checkpoint, save_checkpoint, set_rng_state
from harness.training.compiling import Compilation
from harness.training.train_config import TrainConfig, resolve_precision
from harness.training.batches import TrainBatches, eval_batches
from harness.training.distributed import DistInfo, mean_over_ranks, wrap_model
from harness.training.failures import is_out_of_memory
from harness.training.metrics import RunMetrics, still_learning
from harness.training.optimizer_state import sync_optimizer
from harness.training.state import TrainingState


class Callback(Protocol):
    """Called before every step; a returned dict is an event: the model's attention changed.

    Callbacks must decide from `step` alone (as bootstrap schedules do): on resume they are
    replayed over the finished steps to rebuild the model's structure before its weights load.
    A callback that replaces parameters by grown copies exposes them as `replaced` (`sync_optimizer`).
    """

    def on_step_start(self, step: int, model: nn.Module) -> Optional[dict]: ...


@dataclass
class Splits:
    train: Any
    val: Any
    test: Any


@dataclass
class TrainResult:
    status: str  # ok | diverged | oom | timeout
    reason: Optional[str]
    metrics: RunMetrics
    events: list[dict] = field(default_factory=list)


# --------------------------------------------------------------------------- pieces of a step


def lr_factor(step: int, config: TrainConfig) -> float:
    """Multiplier of config.lr at 0-based `step` (the schedules of the LRA code and its ports)."""
    s, warmup = step + 1, config.warmup_steps
    if config.schedule == "rsqrt":  # LRA: base * min(1, s/w) / sqrt(max(s, w))
        w = max(warmup, 1)
        return min(1.0, s / w) / math.sqrt(max(s, w))
    ramp = min(1.0, s / warmup) if warmup else 1.0
    if config.schedule == "constant" or s <= warmup:
        return ramp
    progress = (s - warmup) / max(1, config.steps - warmup)  # 0 -> 1 after the warm-up
    if config.schedule == "cosine":
        return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))
    return max(0.0, 1.0 - progress)  # onecycle: linear up, then linear down to 0


def loss_and_correct(logits: torch.Tensor, targets: torch.Tensor, head: str) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Cross-entropy, number of correct predictions, number of scored targets.

    Token heads score every position whose target is not -100; other heads one label per example.
    """
    if head == "token":
        logits = logits.flatten(0, 1)  # (B*n, C)
        targets = targets.flatten()  # (B*n,)
    loss = F.cross_entropy(logits.float(), targets, ignore_index=-100)
    scored = targets != -100
    correct = ((logits.argmax(dim=-1) == targets) & scored).sum()
    return loss, correct, scored.sum()


@torch.no_grad()
def evaluate(model: nn.Module, split: Any, batch_size: int, max_batches: Optional[int], head: str,
             device: torch.device, precision: Optional[str] = None) -> float:
    """Accuracy over the split (or its first `max_batches` batches), in eval mode, at `precision`."""
    was_training = model.training
    model.eval()
    correct = total = 0
    for inputs, targets in eval_batches(split, batch_size, max_batches, device):
        with autocast(device, precision):
            logits = model(inputs)
        _, batch_correct, batch_total = loss_and_correct(logits, targets, head)
        correct, total = correct + int(batch_correct), total + int(batch_total)
    model.train(was_training)
    return correct / max(total, 1)


def autocast(device: torch.device, precision: Optional[str] = None):
    """bf16 autocast (CUDA or CPU) when `precision` is bf16, else plain fp32; null: the device's
    default (`resolve_precision`: bf16 on CUDA, as LRA's GPU ports; fp32 on CPU)."""
    if resolve_precision(precision, device.type) == "bf16":
        return torch.autocast(device.type, dtype=torch.bfloat16)
    return nullcontext()


def reset_run_peak_memory(device: torch.device) -> None:
    """Starts the window `run_peak_memory_mb` reads (CUDA allocator stats; Linux VmHWM via clear_refs)."""
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
        return
    try:
        with open("/proc/self/clear_refs", "w") as handle:
            handle.write("5")  # resets the peak resident set size (VmHWM) of this process
    except OSError:
        pass  # not Linux: ru_maxrss below is then the process's lifetime peak


def run_peak_memory_mb(device: torch.device) -> float:
    """High-water mark of the whole run, in MiB: on CUDA the most the allocator held; on CPU the
    process's peak resident set (Linux VmHWM), else its lifetime peak (ru_maxrss: KiB on Linux,
    bytes on macOS). Unlike `timing.extra_memory_mb` it includes weights, data and the optimizer."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    try:
        with open("/proc/self/status") as handle:
            for line in handle:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 2**10  # kB
    except OSError:
        pass
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return rss / 2**20 if sys.platform == "darwin" else rss / 2**10


# --------------------------------------------------------------------------- the loop


class Progress:
    """tqdm bar with loss, accuracy and steps/s; silent off a terminal and on ranks other than 0."""

    def __init__(self, total: int, initial: int, label: str, enabled: bool):
        self.bar = None
        if enabled and sys.stderr.isatty():
            from tqdm import tqdm

            self.bar = tqdm(total=total, initial=initial, desc=label, leave=False, dynamic_ncols=True)

    def update(self, loss: float, accuracy: float, steps_per_second: float, refresh: bool) -> None:
        if self.bar is not None:
            self.bar.update(1)
            if refresh:
                self.bar.set_postfix(loss=f"{loss:.3f}", acc=f"{accuracy:.3f}", it_s=f"{steps_per_second:.1f}")

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def train(
    model: nn.Module,
    splits: Splits,
    config: TrainConfig,
    *,
    head: str,
    seed: int,
    device: torch.device,
    callbacks: Sequence[Callback] = (),
    checkpoint_path: Optional[Path] = None,
    checkpoint_key: str = "",
    dist: DistInfo = DistInfo(),
    label: str = "",
    progress: bool = True,
) -> TrainResult:
    """Trains `model` (already on `device`) and tests its best-validation state.

    `checkpoint_key` (the config hash) guards resume: a checkpoint written for another config is
    ignored. Only rank 0 writes checkpoints.
    """
    batches = TrainBatches(splits.train, config.batch_size, seed, device, dist)
    optimizer = torch.optim.AdamW(model.parameters(), lr=config.lr, betas=config.betas, eps=config.eps,
                                  weight_decay=config.weight_decay)
    state = resume(checkpoint_path, checkpoint_key, model, optimizer, callbacks) if checkpoint_path else None
    if state is not None and dist.is_primary:
        print(f"{label or 'run'}: resuming from its checkpoint at step {state.step}", file=sys.stderr)
    state = state or TrainingState()

    reset_run_peak_memory(device)
    eval_batch_size = max(1, config.batch_size // dist.world_size)
    status, reason = "ok", None
    loss_sum, loss_count, accuracy = 0.0, 0, 0.0
    tokens_per_step = 0
    start = time.perf_counter()

    def elapsed() -> float:  # the run's wall-clock time, earlier processes included
        return state.elapsed + time.perf_counter() - start

    bar = Progress(config.steps, state.step, label, progress and dist.is_primary)
    compilation = Compilation(config.compile)
    net = compilation.wrap(wrap_model(model, dist))  # what the steps call; `model` for everything else
    model.train()
    try:
        while state.step < config.steps:
            step_start, compiled_before = time.perf_counter(), compilation.seconds
            if run_callbacks(state.step, model, optimizer, callbacks, state.events):
                # The method changed: the optimizer already follows the model's parameters, and the
                # best checkpoint is chosen afresh, so a bootstrapped method is never credited
                # with its warm-up model's accuracy.
                net = compilation.wrap(wrap_model(model, dist))
                state.forget_best()
            set_learning_rate(optimizer, config, state.step)
            inputs, targets = batches.batch(state.step)
            tokens_per_step = tokens_per_step or inputs.numel() * dist.world_size
            loss_value, correct, scored = take_step(net, model, optimizer, inputs, targets, config, head, device, dist)
            if not math.isfinite(loss_value):
                status, reason = "diverged", f"non-finite training loss ({loss_value}) at step {state.step + 1}"
                break
            state.step += 1
            compiling = compilation.seconds - compiled_before
            state.compile_seconds += compiling
            state.seconds += time.perf_counter() - step_start - compiling
            loss_sum, loss_count = loss_sum + loss_value, loss_count + 1
            refresh = state.step % 10 == 0 or state.step == config.steps
            if refresh:
                accuracy = int(correct) / max(int(scored), 1)
            bar.update(loss_value, accuracy, state.step / max(state.seconds, 1e-9), refresh)

            if state.step % config.eval_every == 0 or state.step == config.steps:
                val_accuracy = evaluate(model, splits.val, eval_batch_size, config.eval_batches, head, device,
                                        config.precision)
                state.record_evaluation(val_accuracy, loss_sum / loss_count, model)
                loss_sum, loss_count = 0.0, 0
                if checkpoint_path is not None and dist.is_primary:
                    save_checkpoint(checkpoint_path, state.checkpoint(checkpoint_key, model, optimizer, callbacks,
                                                                      elapsed()))
                if config.early_stop_patience is not None and state.evals_without_gain >= config.early_stop_patience:
                    break
            if config.time_limit_s is not None and elapsed() > config.time_limit_s and state.step < config.steps:
                status, reason = "timeout", f"time limit {config.time_limit_s:g}s reached after {state.step} steps"
                break
    except (MemoryError, RuntimeError) as err:  # CUDA OOM and torch's CPU allocator raise RuntimeErrors
        if not is_out_of_memory(err):
            raise
        status, reason = "oom", f"out of memory at step {state.step + 1}: {first_line(err)}"
    finally:
        bar.close()
        compilation.close()

    test_accuracy = None
    if state.best_state is not None and status != "oom":
        test_accuracy = final_test(model, state, splits.test, eval_batch_size, head, device, config.precision)
    metrics = dataclasses.replace(
        state.measured(), test_accuracy=test_accuracy,
        tokens_per_second=state.step * tokens_per_step / state.seconds if state.seconds else None,
        peak_memory_mb=run_peak_memory_mb(device), still_learning=still_learning(state.history, state.step))
    return TrainResult(status=status, reason=reason, metrics=metrics, events=state.events)


def resume(path: Path, key: str, model: nn.Module, optimizer: torch.optim.Optimizer,
           callbacks: Sequence[Callback]) -> Optional[TrainingState]:
    """The state of the checkpoint at `path` with model, optimizer, callbacks and RNGs restored;
    None when there is none or it was written for another config (`key`).

    The callbacks are replayed over the finished steps first, so the model has the structure
    (bootstrap swaps) the saved weights belong to.
    """
    saved = load_checkpoint(path)
    if saved is None or saved.get("key") != key:
        return None
    events: list[dict] = []
    for replayed in range(saved["step"]):
        run_callbacks(replayed, model, optimizer, callbacks, events)
    if len(events) != len(saved["events"]):
        raise BenchError(f"checkpoint {path}: callbacks replayed {len(events)} events, "
                         f"the run had {len(saved['events'])}; delete it to restart that run")
    model.load_state_dict(saved["model"])
    optimizer.load_state_dict(saved["optimizer"])
    for callback, callback_state in zip(callbacks, saved["callbacks"]):
        if callback_state is not None and hasattr(callback, "load_state_dict"):
            callback.load_state_dict(callback_state)
    set_rng_state(saved["rng"])
    return TrainingState.from_checkpoint(saved)


def run_callbacks(step: int, model: nn.Module, optimizer: torch.optim.Optimizer, callbacks: Sequence[Callback],
                  events: list[dict]) -> bool:
    """Runs the callbacks before `step`; each event is appended to `events` and the optimizer made
    to follow the model's new parameters. True when the model changed."""
    changed = False
    for callback in callbacks:
        event = callback.on_step_start(step, model)
        if event is not None:
            events.append({"step": step, **event})
            sync_optimizer(optimizer, model, getattr(callback, "replaced", None))
            changed = True
    return changed


def set_learning_rate(optimizer: torch.optim.Optimizer, config: TrainConfig, step: int) -> None:
    for group in optimizer.param_groups:
        group["lr"] = config.lr * lr_factor(step, config)


def take_step(net: nn.Module, model: nn.Module, optimizer: torch.optim.Optimizer, inputs: torch.Tensor,
              targets: torch.Tensor, config: TrainConfig, head: str, device: torch.device,
              dist: DistInfo) -> tuple[float, torch.Tensor, torch.Tensor]:
    """Forward, backward, clipping and the update; (loss over ranks, correct, scored).

    A non-finite loss is returned before the update, so the weights are never spoiled by it.
    """
    with autocast(device, config.precision):
        logits = net(inputs)
    loss, correct, scored = loss_and_correct(logits, targets, head)
    loss_value = mean_over_ranks(loss.item(), dist)
    if not math.isfinite(loss_value):
        return loss_value, correct, scored
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    if config.grad_clip is not None:
        nn.utils.clip_grad_norm_(model.parameters(), config.grad_clip)
    optimizer.step()
    return loss_value, correct, scored


def final_test(model: nn.Module, state: TrainingState, test_split: Any, batch_size: int, head: str,
                    device: torch.device, precision: Optional[str]) -> float:
    """Loads the best-validation state and measures test accuracy.

    The attention cores' diagnostics are reset first, so after this call they describe the test
    evaluation alone, the same whether or not the run was resumed.
    """
    model.load_state_dict(state.best_state)
    for core in getattr(model, "attention_cores", list)():
        core.reset_diagnostics()
    return evaluate(model, test_split, batch_size, None, head, device, precision)
