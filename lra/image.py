"""CIFAR-10 as LRA "Image": TFDS `cifar10`, grayscale, 1024 pixel tokens (values 0-255).

Splits as the official pipeline: train[:90%] / train[90%:] / test, in TFDS order. Grayscale as
`tf.image.rgb_to_grayscale` followed by the uint8 conversion TensorFlow applies (weights
0.2989/0.5870/0.1140 on [0, 1] values, scaled by 255.5 and truncated).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from lra.cache import Split
from lra.task import Built, Loader, Task
from lra.fingerprint import Source
from lra.tfds_source import as_int, open_split, records, tfds_dir, tfds_source

GRAY_WEIGHTS = np.array([0.2989, 0.5870, 0.1140], dtype=np.float32)


def to_grayscale(images: np.ndarray) -> np.ndarray:
    """(N, H, W, 3) uint8 -> (N, H, W) uint8, matching TensorFlow's rgb_to_grayscale on uint8."""
    gray = (images.astype(np.float32) / 255.0) @ GRAY_WEIGHTS
    return np.floor(gray * 255.5).clip(0, 255).astype(np.uint8)


@dataclass(frozen=True)
class Cifar10Loader(Loader):
    def source(self, task: Task, data_dir: Path, params: dict[str, Any]) -> Source:
        return tfds_source(data_dir, "cifar10")

    def build(self, task: Task, data_dir: Path, params: dict[str, Any]) -> Built:
        arrays = {}
        for split in ("train", "test"):
            rows = list(records(open_split(task.name, "cifar10", split, tfds_dir(data_dir)), ("image", "label")))
            images = np.stack([np.asarray(r["image"], dtype=np.uint8) for r in rows])
            pixels = to_grayscale(images).reshape(len(rows), -1)  # uint8 pixel ids
            arrays[split] = (pixels, np.asarray([as_int(r["label"]) for r in rows], dtype=np.int64))
        cut = int(round(0.9 * len(arrays["train"][1])))
        train_x, train_y = arrays["train"]
        return Built({
            "train": Split(train_x[:cut], train_y[:cut]),
            "val": Split(train_x[cut:], train_y[cut:]),
            "test": Split(*arrays["test"]),
        })
