"""Text classification beyond LRA, subword-tokenised: GLUE SST-2 and MNLI (TFDS `glue`), IMDb.

Pairs (MNLI premise/hypothesis) are concatenated as `premise <sep> hypothesis` for the ordinary
sequence head: one encoder pass per example, like BERT-style NLI, rather than the Retrieval dual
encoder. GLUE test labels are hidden, so the GLUE validation split is our test split and a seeded
`val_fraction` of train is held out for checkpoint selection.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

import numpy as np

from bench_common import BenchError
from lra.cache import Split, params_hash
from lra.subword import encode, train_or_load
from lra.fingerprint import Source
from lra.task import Built, Loader, Task
from lra.text import check_validation, imdb_source, read_imdb, split_train_val
from lra.tfds_source import as_bytes, as_int, open_split, records, tfds_dir, tfds_source


def _tokenizer_path(task: Task, data_dir: Path, params: dict[str, Any]) -> Path:
    """Keyed by the data fingerprint: a tokenizer trained on other files is never reused."""
    raw = task.data_source(data_dir, params)["fingerprint"]
    key = params_hash({"task": task.name, "version": task.version, "vocab_size": params["vocab_size"], "raw": raw})
    return data_dir / "tokenizers" / f"{task.name}-{key}.model"


def _check_vocab(task: Task, params: dict[str, Any]) -> None:
    if params["vocab_size"] < 16:
        raise BenchError(f"task '{task.name}' param 'vocab_size': must be at least 16")


@dataclass(frozen=True)
class GlueLoader(Loader):
    """`dataset` is "glue/sst2" or "glue/mnli"; `fields` the text field(s); `test_split` the GLUE split we test on."""

    dataset: str
    fields: tuple[str, ...]
    test_split: str

    def validate(self, task: Task, params: dict[str, Any]) -> None:
        _check_vocab(task, params)
        if not 0 < params["val_fraction"] < 1:
            raise BenchError(f"task '{task.name}' param 'val_fraction': must be in (0, 1)")

    def shape(self, task: Task, params: dict[str, Any]) -> dict[str, int]:
        return {"vocab_size": params["vocab_size"]}

    def source(self, task: Task, data_dir: Path, params: dict[str, Any]) -> Source:
        return tfds_source(data_dir, self.dataset)

    def _read(self, task: Task, data_dir: Path, split: str) -> tuple[list[list[bytes]], np.ndarray]:
        rows = list(records(open_split(task.name, self.dataset, split, tfds_dir(data_dir)), (*self.fields, "label")))
        texts = [[as_bytes(r[f]) for r in rows] for f in self.fields]
        return texts, np.asarray([as_int(r["label"]) for r in rows], dtype=np.int64)

    def build(self, task: Task, data_dir: Path, params: dict[str, Any]) -> Built:
        train_texts, train_labels = self._read(task, data_dir, "train")
        test_texts, test_labels = self._read(task, data_dir, self.test_split)
        corpus = [t for column in train_texts for t in column]
        processor = train_or_load(_tokenizer_path(task, data_dir, params), corpus, params["vocab_size"])

        def tokenise(texts: list[list[bytes]]) -> np.ndarray:
            second: Optional[list[bytes]] = texts[1] if len(texts) > 1 else None
            return encode(processor, texts[0], task.seq_len, second)

        train_x = tokenise(train_texts)
        order = np.random.default_rng(params["seed"]).permutation(len(train_labels))
        held = max(1, int(len(order) * params["val_fraction"]))
        val_idx, train_idx = order[:held], order[held:]
        return Built({
            "train": Split(train_x[train_idx], train_labels[train_idx]),
            "val": Split(train_x[val_idx], train_labels[val_idx]),
            "test": Split(tokenise(test_texts), test_labels),
        })


@dataclass(frozen=True)
class ImdbSubwordLoader(Loader):
    """Long-document IMDb with a subword vocabulary trained on the IMDb training reviews."""

    def validate(self, task: Task, params: dict[str, Any]) -> None:
        _check_vocab(task, params)
        check_validation(task, params)

    def shape(self, task: Task, params: dict[str, Any]) -> dict[str, int]:
        return {"vocab_size": params["vocab_size"]}

    def source(self, task: Task, data_dir: Path, params: dict[str, Any]) -> Source:
        return imdb_source(data_dir)

    def build(self, task: Task, data_dir: Path, params: dict[str, Any]) -> Built:
        raw = read_imdb(task, data_dir)
        processor = train_or_load(_tokenizer_path(task, data_dir, params), raw["train"][0], params["vocab_size"])
        parts = split_train_val(raw["train"], raw["test"], params["validation"], params["seed"])
        return Built({
            name: Split(encode(processor, texts, task.seq_len), np.asarray(labels, dtype=np.int64))
            for name, (texts, labels) in parts.items()
        })
