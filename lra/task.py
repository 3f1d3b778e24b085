"""The Task declaration and its preparation pipeline (validate params -> fingerprint the source ->
cache hit or build -> cache).

A task states everything that defines its results in one place (source, tokenisation, shapes,
head, configs, version). How its raw data is found, generated and tokenised lives in a `Loader`
(one per data family), so the declaration table in `lra/catalog.py` stays declarative.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

import numpy as np

from bench_common import BenchError, Registry, check_option_keys
from bench_common.values import check_value
from lra.cache import SPLITS, Split, entry_dir, load_entry, save_entry
from lra.fingerprint import Source, fingerprint

HEADS = ("sequence", "dual", "token")
IGNORE_INDEX = -100  # token-head targets at positions that are not scored
FAMILIES = ("lra", "uniform")


class Loader(ABC):
    """Finds (or generates) a task's raw data and turns it into tokenised splits."""

    #: True when the raw data can be generated on this machine without downloads.
    offline: bool = False

    def validate(self, task: "Task", params: dict[str, Any]) -> None:
        """Raises BenchError for parameter values out of range (keys and types are checked already)."""

    @abstractmethod
    def source(self, task: "Task", data_dir: Path, params: dict[str, Any]) -> Source:
        """Where `build` will read the raw data from (official files, generated, TFDS), and which files.

        Cheap (no reading, no generating): it is called whenever a run is planned.
        """

    def shape(self, task: "Task", params: dict[str, Any]) -> dict[str, int]:
        """ModelConfig fields that depend on params (max_seq_len, vocab_size, num_classes)."""
        return {}

    @abstractmethod
    def build(self, task: "Task", data_dir: Path, params: dict[str, Any]) -> "Built":
        """Reads (generating first if needed) and tokenises the raw data; fails fast if it is missing."""

    def shortcut_baselines(self, split: Split, params: dict[str, Any]) -> dict[str, float]:
        """Accuracies on `split` of rules that solve the task without its skill (recall: guess the
        context's most frequent value); a method is read as having the skill only above them."""
        return {}


@dataclass(frozen=True)
class Built:
    """What a loader built: the splits, and counts worth recording (e.g. skipped empty images)."""

    splits: dict[str, Split]
    notes: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Prepared:
    """Prepared splits and the `data` block a run record carries: source, root, fingerprint, sizes
    and the loader's notes."""

    splits: dict[str, Split]
    data: dict[str, Any]


@dataclass(frozen=True, eq=False)
class Task:
    """A benchmark task: what the data is, how it is tokenised, and the configs that go with it."""

    name: str
    version: int
    description: str
    source: str
    tokenisation: str
    seq_len: int
    vocab_size: int
    num_classes: int
    head: str
    pad_id: Optional[int]
    loader: Loader
    params: dict[str, Any] = field(default_factory=dict)
    model_configs: dict[str, dict[str, Any]] = field(default_factory=dict)
    train_configs: dict[str, dict[str, Any]] = field(default_factory=dict)
    metric: str = "accuracy"

    def __post_init__(self) -> None:
        if self.head not in HEADS:
            raise BenchError(f"task '{self.name}': head must be one of {', '.join(HEADS)}, got {self.head!r}")
        missing = [f for f in FAMILIES if f not in self.model_configs or f not in self.train_configs]
        if missing:
            raise BenchError(f"task '{self.name}': missing config families {', '.join(missing)}")

    @property
    def offline(self) -> bool:
        """True when `prepare` can generate the data here (no downloads, no release files)."""
        return self.loader.offline

    def check_params(self, params: Optional[dict[str, Any]] = None) -> dict[str, Any]:
        """Defaults updated by `params`; unknown keys rejected, each value checked against the type
        of its default (`check_value`, the rule of every config value: an integer is a number, a
        string is not)."""
        params = dict(params or {})
        check_option_keys(f"task '{self.name}' params", params, self.params)
        resolved = dict(self.params)
        for key, value in params.items():
            resolved[key] = check_value(f"task '{self.name}' param '{key}'", value, type(self.params[key]))
        self.loader.validate(self, resolved)
        return resolved

    def model_config(self, family: str, params: Optional[dict[str, Any]] = None) -> dict[str, Any]:
        """The ModelConfig overrides of `family` with the data-dependent fields for `params`."""
        if family not in self.model_configs:
            raise BenchError(f"task '{self.name}': unknown config family '{family}'; accepted: {', '.join(FAMILIES)}")
        resolved = self.check_params(params)
        return {**self.model_configs[family], **self.loader.shape(self, resolved)}

    def data_source(self, data_dir: Path, params: Optional[dict[str, Any]] = None) -> dict[str, Any]:
        """{"source", "root", "fingerprint"} of the raw data `prepare` would read now (nothing is read:
        files are only stat-ed, generated data is named by its recipe)."""
        resolved = self.check_params(params)
        source = self.loader.source(self, Path(data_dir), resolved)
        return self._describe(source, resolved)

    def _describe(self, source: Source, params: dict[str, Any]) -> dict[str, Any]:
        recipe = {"task": self.name, "version": self.version, "params": params}
        return {"source": source.kind, "root": None if source.root is None else str(source.root),
                "fingerprint": fingerprint(source, recipe)}

    def shortcut_baselines(self, split: Split, params: Optional[dict[str, Any]] = None) -> dict[str, float]:
        """The loader's shortcut accuracies on `split` (see Loader.shortcut_baselines)."""
        return self.loader.shortcut_baselines(split, self.check_params(params))

    def prepare(self, data_dir: Path, params: Optional[dict[str, Any]] = None) -> dict[str, Split]:
        """Splits "train", "val", "test", tokenised once and then read memory-mapped from the cache."""
        return self.prepare_data(data_dir, params).splits

    def prepare_data(self, data_dir: Path, params: Optional[dict[str, Any]] = None) -> Prepared:
        """`prepare`, plus the data block naming exactly what was read.

        The cache key holds the data fingerprint, so a replaced, edited or deleted source file
        leads to a new entry instead of the old arrays.
        """
        resolved = self.check_params(params)
        data_dir = Path(data_dir)
        described = self.data_source(data_dir, resolved)
        key = {
            "task": self.name,
            "version": self.version,
            "params": resolved,
            "source": described["source"],
            "fingerprint": described["fingerprint"],
        }
        directory = entry_dir(data_dir, self.name, self.version, key)
        cached = load_entry(directory)
        if cached is None:
            built = self.loader.build(self, data_dir, resolved)
            self._check_splits(built.splits, resolved)
            save_entry(directory, built.splits, {**key, "notes": built.notes})
            cached = load_entry(directory)
            assert cached is not None  # save_entry either wrote it or found an equivalent entry
        splits, meta = cached
        data = {**described, "sizes": {name: len(splits[name]) for name in SPLITS}, **meta.get("notes", {})}
        return Prepared(splits, data)

    def _check_splits(self, splits: dict[str, Split], params: dict[str, Any]) -> None:
        """Guards the contract the harness relies on: shapes, dtypes and target ranges."""
        shape = {**self.model_configs["lra"], **self.loader.shape(self, params)}
        for name in SPLITS:
            split = splits[name]
            if len(split) == 0:
                raise BenchError(f"task '{self.name}': split '{name}' is empty; check the data or raise num_examples")
            inputs, targets = split.inputs, split.targets
            expected_rank = 3 if self.head == "dual" else 2
            if inputs.ndim != expected_rank or inputs.shape[0] != targets.shape[0]:
                raise BenchError(f"task '{self.name}': split '{name}' has inputs {inputs.shape}, targets {targets.shape}")
            if not np.issubdtype(inputs.dtype, np.integer) or not np.issubdtype(targets.dtype, np.integer):
                raise BenchError(f"task '{self.name}': split '{name}' must hold integer arrays")
            if inputs.shape[-1] > shape["max_seq_len"] or inputs.max(initial=0) >= shape["vocab_size"]:
                raise BenchError(f"task '{self.name}': split '{name}' exceeds length or vocabulary")
            scored = targets[targets != IGNORE_INDEX] if self.head == "token" else targets
            if scored.size and (scored.min() < 0 or scored.max() >= shape["num_classes"]):
                raise BenchError(f"task '{self.name}': split '{name}' has labels outside 0..{shape['num_classes'] - 1}")


TASKS: Registry[Task] = Registry("task", Task)


def get_task(name: str) -> Task:
    """The registered task `name` (an error suggests close names and lists all)."""
    return TASKS.get(name)


def list_tasks() -> list[str]:
    """All registered task names, sorted (the package import registers the catalog)."""
    return TASKS.names()
