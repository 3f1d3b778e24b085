"""Reading datasets prepared by tensorflow-datasets (array_record) without TensorFlow.

Only the random-access API works without TensorFlow, so datasets must have been prepared with
`file_format='array_record'`. We look for the prepared directory ourselves before touching tfds:
offline, tfds would otherwise retry downloads for minutes. Records are normalised (text as bytes,
labels and images as numpy) so real data and `tfds.testing.mock_data` read the same.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Iterator, Optional

import numpy as np

from bench_common import BenchError, describe_error
from lra.fingerprint import Source, files_under

TFDS_SUBDIR = "tensorflow_datasets"


def tfds_dir(data_dir: Path) -> Path:
    """Where prepared TFDS datasets are looked for: `<data_dir>/tensorflow_datasets`."""
    return Path(data_dir) / TFDS_SUBDIR


def prepare_command(dataset: str, directory: Path) -> str:
    return (
        f"python -c \"import tensorflow_datasets as tfds; tfds.builder('{dataset}', data_dir='{directory}')"
        f".download_and_prepare(file_format='array_record')\""
    )


def prepared_dir(directory: Path, dataset: str) -> Optional[Path]:
    """`<dir>/<name>/<config>/<version>/` (newest version) holding dataset_info.json, or None."""
    name, _, config = dataset.partition("/")
    base = Path(directory) / name
    candidates = [p.parent for p in base.glob("*/dataset_info.json")] + [p.parent for p in base.glob("*/*/dataset_info.json")]
    if config:
        candidates = [p for p in candidates if p.parent.name == config]
    candidates = [p for p in candidates if not p.name.startswith("incomplete")]
    if not candidates:
        return None
    return max(candidates, key=lambda p: tuple(int(x) if x.isdigit() else 0 for x in p.name.split(".")))


def tfds_source(data_dir: Path, dataset: str) -> Source:
    """The prepared directory of `dataset` and every file in it, or a "missing" source."""
    location = prepared_dir(tfds_dir(data_dir), dataset)
    if location is None:
        return Source("missing", tfds_dir(data_dir))
    return Source("tfds", location, tuple(files_under(location)))


def missing_error(task: str, dataset: str, directory: Path, alternative: str = "") -> BenchError:
    extra = f"; or {alternative}" if alternative else ""
    return BenchError(
        f"task '{task}': TFDS dataset '{dataset}' is not prepared under {directory} (expected "
        f"{directory}/{dataset.split('/')[0]}/.../dataset_info.json with array_record files); prepare it on a "
        f"machine with network with: {prepare_command(dataset, directory)} and copy {directory} here{extra}"
    )


def open_split(task: str, dataset: str, split: str, directory: Path, alternative: str = "") -> Any:
    """A random-access source over `split` of a prepared dataset; fails fast when it is missing."""
    location = prepared_dir(directory, dataset)
    if location is None:
        raise missing_error(task, dataset, directory, alternative)
    base_split = split.split("[")[0]
    if not list(location.glob(f"*-{base_split}.array_record*")):
        if list(location.glob(f"*-{base_split}.tfrecord*")):
            raise BenchError(
                f"task '{task}': TFDS dataset '{dataset}' at {location} was prepared as tfrecord, which needs "
                f"TensorFlow; prepare it again with file_format='array_record': {prepare_command(dataset, directory)}"
            )
        raise BenchError(f"task '{task}': TFDS dataset '{dataset}' at {location} has no split '{base_split}'")
    import tensorflow_datasets as tfds

    try:
        return tfds.builder_from_directory(str(location)).as_data_source(split=split)
    except Exception as err:  # damaged dataset_info.json / features.json / array_record files
        raise BenchError(f"task '{task}': TFDS dataset '{dataset}' at {location} is unreadable "
                         f"({describe_error(err)}); prepare it again: {prepare_command(dataset, directory)}") from None


def records(source: Any, fields: tuple[str, ...] = ()) -> Iterator[dict[str, Any]]:
    """Every record of `source`, each holding `fields`; a damaged file is a one-line error naming
    the dataset directory."""
    where = getattr(getattr(source, "dataset_info", None), "data_dir", "the TFDS data source")
    split = getattr(source, "split", "?")
    for index in range(len(source)):
        try:
            record = source[index]
        except Exception as err:
            raise BenchError(f"{where}: record {index} of split '{split}' is unreadable ({describe_error(err)}); "
                             f"prepare the dataset again") from None
        missing = [name for name in fields if name not in record]
        if missing:
            raise BenchError(f"{where}: record {index} of split '{split}' lacks field(s) {', '.join(missing)}; "
                             f"it has {', '.join(sorted(record))}")
        yield record


def as_bytes(value: Any) -> bytes:
    """Text fields: real array_record data gives bytes, mock data gives str."""
    if isinstance(value, bytes):
        return value
    if isinstance(value, np.ndarray):
        value = value.item()
        if isinstance(value, bytes):
            return value
    return str(value).encode("utf-8")


def as_int(value: Any) -> int:
    """Label fields: ints, or 0-d arrays in mock data."""
    return int(np.asarray(value))
