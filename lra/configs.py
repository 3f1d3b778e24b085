"""The two config families every task offers (docs/lra.md).

"lra": the official LRA code configs (they differ from the paper appendix; the maintainers say the
configs produced the published table). "uniform": the single 2-layer, 64-wide model the PyTorch
ports (Nystromformer, xformers, Skyformer) use for every task, which makes methods comparable at
one small budget.
"""

from __future__ import annotations

from typing import Any, Optional


def lra_model(
    *, num_layers: int, num_heads: int, emb_dim: int, qkv_dim: int, mlp_dim: int, pooling: str,
    positions: str = "sinusoidal", dropout: float = 0.1, attention_dropout: float = 0.1,
) -> dict[str, Any]:
    """Defaults are the official model's (dropout_rate = attention_dropout_rate = 0.1, fixed positions)."""
    return {
        "num_layers": num_layers, "num_heads": num_heads, "emb_dim": emb_dim, "qkv_dim": qkv_dim, "mlp_dim": mlp_dim,
        "pooling": pooling, "positions": positions, "dropout": dropout, "attention_dropout": attention_dropout,
    }


def lra_train(
    *, batch_size: int, lr: float, weight_decay: float, schedule: str, warmup_steps: int, steps: int,
    eval_every: int, grad_clip: Optional[float] = None,
) -> dict[str, Any]:
    """`eval_every` is the config's eval_frequency: it decides which best-validation state is tested."""
    return {
        "batch_size": batch_size, "lr": lr, "weight_decay": weight_decay, "schedule": schedule,
        "warmup_steps": warmup_steps, "steps": steps, "grad_clip": grad_clip, "eval_every": eval_every,
    }


def uniform_model(pooling: str = "mean") -> dict[str, Any]:
    """2 layers, 2 heads of 32, 64/64/128, mean pooling, as the PyTorch ports."""
    return {
        "num_layers": 2, "num_heads": 2, "emb_dim": 64, "qkv_dim": 64, "mlp_dim": 128,
        "pooling": pooling, "positions": "sinusoidal", "dropout": 0.1,
    }


def uniform_train(*, steps: int, batch_size: int = 32, eval_every: Optional[int] = None) -> dict[str, Any]:
    """AdamW 1e-4 with a linear one-cycle schedule, as the PyTorch ports; steps vary per task.
    `eval_every` None = from the budget (10 evaluations per run), so curves show how a run ends."""
    return {
        "batch_size": batch_size, "lr": 1e-4, "weight_decay": 0.01, "schedule": "onecycle",
        "warmup_steps": max(1, steps // 10), "steps": steps, "grad_clip": None, "eval_every": eval_every,
    }


def families(
    task_fields: dict[str, Any], lra: tuple[dict, dict], uniform: tuple[dict, dict]
) -> tuple[dict[str, dict], dict[str, dict]]:
    """(model_configs, train_configs) with the task's data fields added to both model families."""
    model = {"lra": {**lra[0], **task_fields}, "uniform": {**uniform[0], **task_fields}}
    train = {"lra": dict(lra[1]), "uniform": dict(uniform[1])}
    return model, train
