"""Treeformer Bench tasks: the LRA tasks, NLP tasks, their generators, loaders and cached splits.

Public interface (the harness uses only these):
    get_task(name) -> Task, list_tasks() -> names, TASKS (the registry),
    prepare_task_data(name, data_dir, params) -> {"train", "val", "test": Split},
    Task.data_source(data_dir, params) -> {"source", "root", "fingerprint"} (cheap: stat only),
    Task.prepare_data(data_dir, params) -> Prepared(splits, data block for the run record),
    default_data_dir() -> Path.
Importing the package registers every task of `lra/catalog.py`; nothing heavy is imported
(tensorflow-datasets and sentencepiece load only when a task that needs them is prepared).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Optional

from lra.cache import Split
from lra.datadir import default_data_dir
from lra.task import TASKS, Loader, Prepared, Task, get_task, list_tasks
from lra import catalog  # noqa: F401  (registers the tasks)


def prepare_task_data(name: str, data_dir: Optional[Path] = None, params: Optional[dict[str, Any]] = None) -> dict[str, Split]:
    """Generates (offline tasks) or tokenises the data of task `name` once and returns its splits.

    `data_dir` defaults to `default_data_dir()`; `params` are validated by `Task.check_params`.
    """
    return get_task(name).prepare(Path(data_dir) if data_dir is not None else default_data_dir(), params)


__all__ = ["TASKS", "Loader", "Prepared", "Split", "Task", "default_data_dir", "get_task", "list_tasks", "prepare_task_data"]
