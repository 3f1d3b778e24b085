"""AAN document matching (LRA "Retrieval") from the official headless TSVs.

`new_aan_pairs.{train,eval,test}.tsv`: label, id1, id2, text1, text2 (no header, labels stored as
floats). Byte-level as the official pipeline (first 10,000 bytes, then cut to 4,000 per document);
inputs are (N, 2, 4000) for the dual-encoder head.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from bench_common import BenchError
from lra.cache import Split
from lra.fingerprint import Source
from lra.task import Built, Loader, Task
from lra.tsv import parse_label, read_rows

FILES = {"train": "new_aan_pairs.train.tsv", "val": "new_aan_pairs.eval.tsv", "test": "new_aan_pairs.test.tsv"}
OFFICIAL_DIR = "lra_release/tsv_data"


def read_pairs(path: Path, seq_len: int) -> Split:
    """One AAN TSV as (N, 2, seq_len) byte ids (filled in place: the train file is ~150k pairs) and labels."""
    with open(path, "rb") as stream:
        capacity = sum(1 for line in stream if line.strip())
    inputs = np.zeros((capacity, 2, seq_len), dtype=np.int16)  # (N, 2, n)
    labels = []
    for line, row in read_rows(path, columns=5):
        index = len(labels)
        labels.append(parse_label(path, line, row[0], 2))
        for side, text in enumerate((row[3], row[4])):
            data = text.encode("utf-8")[:10000][:seq_len]  # the official 10,000-byte cut, then the length
            inputs[index, side, :len(data)] = np.frombuffer(data, dtype=np.uint8).astype(np.int16) + 1
    return Split(inputs[:len(labels)], np.asarray(labels, dtype=np.int64))


@dataclass(frozen=True)
class AanLoader(Loader):
    def source(self, task: Task, data_dir: Path, params: dict[str, Any]) -> Source:
        directory = data_dir / OFFICIAL_DIR
        paths = tuple(directory / name for name in FILES.values())
        return Source("official", directory, paths) if all(p.is_file() for p in paths) else Source("missing", directory)

    def build(self, task: Task, data_dir: Path, params: dict[str, Any]) -> Built:
        directory = data_dir / OFFICIAL_DIR
        missing = [name for name in FILES.values() if not (directory / name).is_file()]
        if missing:
            raise BenchError(
                f"task '{task.name}': missing {', '.join(missing)} in {directory}; unpack the LRA release "
                f"(lra_release.gz, see `lra.archive.extract_release`) so that {directory} holds the AAN TSVs"
            )
        return Built({split: read_pairs(directory / name, task.seq_len) for split, name in FILES.items()})
