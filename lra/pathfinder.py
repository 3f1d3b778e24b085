"""Pathfinder and Path-X: the LRA presets of snakes2, the official file layout, and its reader.

Layout (as the LRA release `pathfinder{32,128}/<difficulty dir>/`): `imgs/<batch>/sample_<i>.png`
and `metadata/<batch>.npy`, which despite its name is text, one line per image:
`imgs/<batch> sample_<i>.png <i> <label> <continuity> <contour_length> <distractor_length>
<paddle_length> <thickness> <margin> <number of paddle contrasts>` (field 3 = label).

Generation runs batches in parallel processes; batch b is seeded from (seed, b), so the images do
not depend on the number of processes. A batch's metadata is written last (atomically), so an
interrupted run resumes at the first batch without metadata.

Reading: empty PNGs are skipped, as the official pipeline does, and counted (the record's
`data.empty_images_skipped`). A metadata file whose last line lacks a trailing newline keeps that
line here; the official reader drops it (it cuts each line's last character, assuming a newline).
We keep it deliberately: it is a listed image with a valid label.
"""

from __future__ import annotations

import math
import multiprocessing
import os
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, NamedTuple, Optional

import numpy as np
from PIL import Image, UnidentifiedImageError

from bench_common import BenchError
from bench_common.files import write_atomic
from lra.cache import Split, params_hash
from lra.snakes import SnakeParams, generate_samples
from lra.fingerprint import Source, files_under
from lra.task import Built, Loader, Task
from lra.tsv import parse_label

IMAGES_PER_BATCH = 200  # fixed: part of the data's identity (batch seeds), not a tuning knob

#: LRA presets (docs/lra.md; the official lra_benchmarks/data/pathfinder.py docstrings) before difficulty.
PRESETS = {
    32: SnakeParams(
        window=32, padding=1, antialias=2, margins=(1,), paddle_length=2, thickness=0.5,
        marker_radius=1.5, seed_distance=7, continuity=1.0, contour_length=14, distractor_length=4,
        num_distractors=5, snake_contrasts=(2.0,), paddle_contrasts=(0.75,),
    ),
    128: SnakeParams(
        window=128, padding=1, antialias=2, margins=(2, 3), paddle_length=5, thickness=1.5,
        marker_radius=3, seed_distance=20, continuity=1.8, contour_length=14, distractor_length=4,
        num_distractors=8, snake_contrasts=(0.9,), paddle_contrasts=(1.0,),
    ),
}
#: Total distractor paddles per preset: num_distractors = total // (contour_length // 3).
DISTRACTOR_PADDLES = {32: 20, 128: 35}
DIFFICULTIES = {"easy": 6, "intermediate": 9, "hard": 14}
DIRECTORY = {6: "curv_baseline", 9: "curv_contour_length_9", 14: "curv_contour_length_14"}


def preset(resolution: int, difficulty: str) -> SnakeParams:
    """The snakes2 parameters LRA used for `resolution` and `difficulty` (integer divisions)."""
    contour = DIFFICULTIES[difficulty]
    distractor = contour // 3
    return replace(
        PRESETS[resolution],
        contour_length=contour,
        distractor_length=distractor,
        num_distractors=DISTRACTOR_PADDLES[resolution] // distractor,
    )


def _metadata_line(batch: int, index: int, label: int, margin: int, p: SnakeParams) -> str:
    return " ".join(
        str(v) for v in (
            f"imgs/{batch}", f"sample_{index}.png", index, label, p.continuity, p.contour_length,
            p.distractor_length, p.paddle_length, p.thickness, margin, len(p.paddle_contrasts),
        )
    )


def _write_batch(job: tuple[Path, SnakeParams, int, int, int]) -> int:
    """Generates one batch (PNG files, then its metadata); returns the number of images written."""
    root, params, seed, batch, count = job
    metadata = root / "metadata" / f"{batch}.npy"
    if metadata.is_file():
        return 0
    images = root / "imgs" / str(batch)
    images.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng([seed, batch])
    lines = []
    for index, sample in enumerate(generate_samples(params, rng, count)):
        Image.fromarray(sample.image).save(images / f"sample_{index}.png")
        lines.append(_metadata_line(batch, index, sample.label, sample.margin, params))
    text = "\n".join(lines) + "\n"
    write_atomic(metadata, lambda handle: handle.write(text))
    return count


def generate_layout(root: Path, params: SnakeParams, num_images: int, seed: int, workers: Optional[int] = None) -> Path:
    """Writes `num_images` images in the official layout under `root`, in parallel processes."""
    jobs = []
    for batch in range(math.ceil(num_images / IMAGES_PER_BATCH)):
        count = min(IMAGES_PER_BATCH, num_images - batch * IMAGES_PER_BATCH)
        jobs.append((Path(root), params, seed, batch, count))
    workers = min(workers or os.cpu_count() or 1, len(jobs))
    if workers <= 1:
        for job in jobs:
            _write_batch(job)
    else:
        # spawn: safe even when the caller has threads (torch) or open data sources.
        with multiprocessing.get_context("spawn").Pool(workers) as pool:
            for _ in pool.imap_unordered(_write_batch, jobs):
                pass
    return Path(root)


def _batch_number(path: Path) -> tuple[int, str]:
    return (int(path.stem), "") if path.stem.isdigit() else (1 << 62, path.stem)


def _listed_images(root: Path) -> list[tuple[Path, int, Path, int]]:
    """(image path, label, metadata file, line) for every line of `root/metadata/*.npy`."""
    metadata_files = sorted((root / "metadata").glob("*.npy"), key=_batch_number)
    if not metadata_files:
        raise BenchError(f"no metadata files in {root / 'metadata'}")
    listed = []
    for metadata in metadata_files:
        with open(metadata, encoding="utf-8") as stream:
            for line_number, line in enumerate(_text_lines(stream, metadata), start=1):
                fields = line.split()
                if not fields:
                    continue
                if "\0" in line:
                    raise BenchError(f"{metadata}:{line_number}: NUL byte in a metadata line")
                if len(fields) < 4:
                    raise BenchError(
                        f"{metadata}:{line_number}: expected at least 4 space-separated fields "
                        f"(directory, file, index, label), got {len(fields)}"
                    )
                label = parse_label(metadata, line_number, fields[3], 2)
                listed.append((root / fields[0] / fields[1], label, metadata, line_number))
    return listed


def _text_lines(stream, path: Path):
    """The lines of a text file opened as UTF-8; other bytes are a one-line error naming the file."""
    try:
        yield from stream
    except UnicodeDecodeError as err:
        raise BenchError(f"{path}: not UTF-8 text ({err.reason}: byte 0x{err.object[err.start]:02x}); "
                         f"expected Pathfinder metadata lines") from None


class Layout(NamedTuple):
    pixels: np.ndarray  # (N, window*window) uint8
    labels: np.ndarray  # (N,) int64
    empty_images: int  # listed images skipped because their PNG file is empty


def read_layout(root: Path, window: int) -> Layout:
    """Every image listed in `root/metadata/*.npy`, with its label.

    Empty PNGs are skipped, as the official pipeline does (one is known in the release), and counted.
    """
    listed = _listed_images(root)
    pixels = np.empty((len(listed), window * window), dtype=np.uint8)
    labels = np.empty(len(listed), dtype=np.int64)
    count = empty = 0
    for image_path, label, metadata, line_number in listed:
        try:
            if image_path.stat().st_size == 0:
                empty += 1
                continue
            with Image.open(image_path) as image:
                array = np.asarray(image.convert("L"))
        except FileNotFoundError:
            raise BenchError(f"{metadata}:{line_number}: image {image_path} does not exist") from None
        except (UnidentifiedImageError, Image.DecompressionBombError, OSError, SyntaxError, ValueError) as err:
            raise BenchError(f"{image_path}: unreadable PNG ({type(err).__name__}); listed in {metadata}:{line_number}") from None
        if array.shape != (window, window):
            raise BenchError(f"{image_path}: expected a {window}x{window} image, got {array.shape[1]}x{array.shape[0]}")
        pixels[count] = array.reshape(-1)
        labels[count] = label
        count += 1
    if count == 0:
        raise BenchError(f"{root}: every listed image is empty")
    return Layout(pixels[:count], labels[:count], empty)


def seeded_split(count: int, seed: int, fractions: tuple[float, float] = (0.8, 0.9)) -> dict[str, np.ndarray]:
    """Index arrays for train/val/test: a seeded permutation cut at 80% and 90%."""
    order = np.random.default_rng(seed).permutation(count)
    first, second = int(count * fractions[0]), int(count * fractions[1])
    return {"train": order[:first], "val": order[first:second], "test": order[second:]}


@dataclass(frozen=True)
class PathfinderLoader(Loader):
    """Official release directory when present, else images generated with the LRA preset."""

    resolution: int
    difficulty: str
    offline: bool = True

    @property
    def official_dir(self) -> str:
        return f"lra_release/pathfinder{self.resolution}/{DIRECTORY[DIFFICULTIES[self.difficulty]]}"

    def validate(self, task: Task, params: dict[str, Any]) -> None:
        if params["num_examples"] < 10:
            raise BenchError(f"task '{task.name}': num_examples must be at least 10 (80/10/10 split)")

    def _official(self, data_dir: Path) -> Optional[Path]:
        root = data_dir / self.official_dir
        return root if (root / "metadata").is_dir() else None

    def source(self, task: Task, data_dir: Path, params: dict[str, Any]) -> Source:
        root = self._official(data_dir)
        if root is None:
            return Source("generated", self.generated_dir(task, data_dir, params))
        # What the reader reads: the metadata files and the images (stat only, ~1 s per 200k files).
        return Source("official", root, tuple(files_under(root / "metadata") + files_under(root / "imgs")))

    def generated_dir(self, task: Task, data_dir: Path, params: dict[str, Any]) -> Path:
        generation = {k: params[k] for k in ("num_examples", "seed")}
        return (
            data_dir / "generated" / task.name / f"v{task.version}-{params_hash(generation)}"
            / f"pathfinder{self.resolution}" / DIRECTORY[DIFFICULTIES[self.difficulty]]
        )

    def build(self, task: Task, data_dir: Path, params: dict[str, Any]) -> Built:
        root = self._official(data_dir)
        if root is None:
            root = generate_layout(
                self.generated_dir(task, data_dir, params),
                preset(self.resolution, self.difficulty),
                params["num_examples"],
                params["seed"],
            )
        layout = read_layout(root, self.resolution)
        parts = seeded_split(len(layout.labels), params["seed"])
        splits = {name: Split(layout.pixels[index], layout.labels[index]) for name, index in parts.items()}
        return Built(splits, {"empty_images_skipped": layout.empty_images})
