"""Byte-level IMDb (LRA "Text"): TFDS `imdb_reviews` or the official aclImdb text files.

Tokenisation as the official ByteTextEncoder: UTF-8 bytes, id = byte + 1, 0 = padding, truncated
to the sequence length. Reviews read from aclImdb/ files are stripped of leading and trailing ASCII
whitespace, as TFDS `imdb_reviews` strips them when it prepares the same files. The official pipeline validates on the test split (IMDb has no validation
split); `validation="train"` instead holds out a seeded 10% of train, which keeps checkpoint
selection off the test set.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable

import numpy as np

from bench_common import BenchError
from lra.cache import Split
from lra.fingerprint import Source
from lra.task import Built, Loader, Task
from lra.tfds_source import as_bytes, as_int, open_split, records, tfds_dir, tfds_source

ACL_DIR = "aclImdb"  # the Stanford release (aclImdb_v1.tar.gz) unpacked under data_dir
BYTE_VOCAB = 257  # 256 byte values shifted by one, plus padding


def encode_bytes(texts: Iterable[bytes], seq_len: int) -> np.ndarray:
    """(N, seq_len) int16 ids: byte + 1, zero-padded, truncated."""
    rows = []
    for text in texts:
        ids = np.frombuffer(text[:seq_len], dtype=np.uint8).astype(np.int16) + 1
        rows.append(np.pad(ids, (0, seq_len - ids.size)))
    return np.stack(rows) if rows else np.zeros((0, seq_len), dtype=np.int16)


def read_acl_split(root: Path, split: str) -> tuple[list[bytes], list[int]]:
    """aclImdb/<split>/{neg,pos}/*.txt -> stripped texts and labels (neg = 0, pos = 1, as TFDS)."""
    texts, labels = [], []
    for label, polarity in enumerate(("neg", "pos")):
        directory = root / split / polarity
        if not directory.is_dir():
            raise BenchError(f"missing IMDb directory {directory} (expected aclImdb/{split}/{polarity}/*.txt)")
        for path in sorted(directory.glob("*.txt")):
            texts.append(path.read_bytes().strip())  # TFDS: imdb_f.read().strip() on bytes
            labels.append(label)
    return texts, labels


def read_imdb(task: Task, data_dir: Path) -> dict[str, tuple[list[bytes], list[int]]]:
    """{"train", "test"}: (texts, labels) from aclImdb files if present, else prepared TFDS data."""
    acl = data_dir / ACL_DIR
    if acl.is_dir():
        return {split: read_acl_split(acl, split) for split in ("train", "test")}
    directory = tfds_dir(data_dir)
    out = {}
    for split in ("train", "test"):
        source = open_split(task.name, "imdb_reviews", split, directory,
                            alternative=f"unpack aclImdb_v1.tar.gz into {acl}")
        rows = list(records(source, ("text", "label")))
        out[split] = ([as_bytes(r["text"]) for r in rows], [as_int(r["label"]) for r in rows])
    return out


def imdb_source(data_dir: Path) -> Source:
    """aclImdb/ review files when the directory exists (what `read_imdb` then reads), else TFDS."""
    acl = data_dir / ACL_DIR
    if acl.is_dir():
        files = [path for split in ("train", "test") for polarity in ("neg", "pos")
                 for path in (acl / split / polarity).glob("*.txt")]
        return Source("files", acl, tuple(files))
    return tfds_source(data_dir, "imdb_reviews")


def split_train_val(
    train: tuple[list, list], test: tuple[list, list], validation: str, seed: int
) -> dict[str, tuple[list, list]]:
    """Official: val = test. "train": a seeded 10% of train held out as val."""
    if validation == "test":
        return {"train": train, "val": test, "test": test}
    order = np.random.default_rng(seed).permutation(len(train[1]))
    cut = len(order) - max(1, len(order) // 10)
    pick = lambda part, idx: ([part[0][i] for i in idx], [part[1][i] for i in idx])  # noqa: E731
    return {"train": pick(train, order[:cut]), "val": pick(train, order[cut:]), "test": test}


def check_validation(task: Task, params: dict[str, Any]) -> None:
    if params["validation"] not in ("test", "train"):
        raise BenchError(f"task '{task.name}' param 'validation': expected 'test' (official) or 'train', got {params['validation']!r}")


@dataclass(frozen=True)
class ImdbBytesLoader(Loader):
    def validate(self, task: Task, params: dict[str, Any]) -> None:
        check_validation(task, params)

    def source(self, task: Task, data_dir: Path, params: dict[str, Any]) -> Source:
        return imdb_source(data_dir)

    def build(self, task: Task, data_dir: Path, params: dict[str, Any]) -> Built:
        raw = read_imdb(task, data_dir)
        parts = split_train_val(raw["train"], raw["test"], params["validation"], params["seed"])
        return Built({
            name: Split(encode_bytes(texts, task.seq_len), np.asarray(labels, dtype=np.int64))
            for name, (texts, labels) in parts.items()
        })
