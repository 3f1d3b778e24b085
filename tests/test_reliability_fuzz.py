"""Every reader of user-supplied bytes, fed random, truncated and corrupted input: it returns, or
raises our one-line BenchError, never another exception type (and never a multi-line message).

Readers: ListOps TSV, AAN TSV, Pathfinder PNG + metadata, config files (JSON, TOML, YAML),
--set values, record files and training checkpoints; plus random strings to the config parser.
"""

import io
import itertools
import json
import warnings
from typing import Callable, NamedTuple

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from PIL import Image

from bench_common import BenchError
from harness.config import layered as cfg
from harness.training.checkpoints import load_checkpoint, rng_state, save_checkpoint
from harness.sweep.records import read_record
from lra.listops import read_split_file
from lra.pathfinder import read_layout
from lra.retrieval import read_pairs

FUZZ = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
_names = itertools.count()


def mutations(valid: bytes) -> st.SearchStrategy[bytes]:
    """Random bytes; `valid` cut short; `valid` with bytes overwritten or inserted at random places."""
    cut = st.integers(0, len(valid)).map(lambda n: valid[:n])
    overwritten = st.lists(st.tuples(st.integers(0, max(len(valid) - 1, 0)), st.integers(0, 255)),
                           min_size=1, max_size=4).map(lambda edits: _overwrite(valid, edits))
    inserted = st.tuples(st.integers(0, len(valid)), st.binary(min_size=1, max_size=8)).map(
        lambda edit: valid[:edit[0]] + edit[1] + valid[edit[0]:])
    return st.one_of(st.binary(max_size=300), cut, overwritten, inserted)


def _overwrite(data: bytes, edits) -> bytes:
    out = bytearray(data)
    for index, value in edits:
        if out:
            out[index % len(out)] = value
    return bytes(out)


def fresh(directory, suffix=""):
    return directory / f"case{next(_names)}{suffix}"


def either_succeeds_or_names(where: object, read, *args):
    """`read(*args)` succeeds or raises a BenchError whose message names `where` (the file, the
    directory or the flag). Any other exception type fails the test; so does a message that would
    leave the user guessing which input was bad."""
    try:
        read(*args)
    except BenchError as err:
        assert str(where) in str(err), f"{str(err)!r} does not name {str(where)!r}"


@pytest.fixture(scope="module")
def scratch(tmp_path_factory):
    return tmp_path_factory.mktemp("fuzz")


# --------------------------------------------------------------------------- task data files

class TsvReader(NamedTuple):
    read: Callable
    seq_len: int
    valid: bytes  # a file it reads
    targets: list  # the targets of `valid`


TSV = {
    "listops": TsvReader(read_split_file, 16, b"Source\tTarget\n( ( ( [MAX 2 ) 9 ) ] )\t9\n( ( [SM 3 ) 4 ] )\t7\n", [9, 7]),
    "aan": TsvReader(read_pairs, 32, b"1.0\tP1\tP2\tpaper one\tpaper two\n0\tP3\tP4\ttext \xc3\xa9\tshort\n", [1, 0]),
}


def read_tsv(scratch, kind: str, data: bytes) -> None:
    """The `kind` reader on a fresh file of `data`: it succeeds or names the file."""
    path = fresh(scratch, ".tsv")
    path.write_bytes(data)
    either_succeeds_or_names(path, TSV[kind].read, path, TSV[kind].seq_len)


@pytest.mark.parametrize("kind", list(TSV))
@FUZZ
@given(data=st.data())
def test_tsv_files(scratch, kind, data):
    read_tsv(scratch, kind, data.draw(mutations(TSV[kind].valid)))


@pytest.mark.parametrize("kind", list(TSV))
@pytest.mark.parametrize("data", [b"\x80", b"Source\tTarget\n\x00\t1\n"], ids=["not-utf8", "nul-byte"])
def test_tsv_odd_bytes(scratch, kind, data):
    read_tsv(scratch, kind, data)


@pytest.mark.parametrize("kind", list(TSV))
def test_tsv_seed_is_valid(scratch, kind):
    reader = TSV[kind]
    path = fresh(scratch, ".tsv")
    path.write_bytes(reader.valid)
    assert reader.read(path, reader.seq_len).targets.tolist() == reader.targets


def png_bytes(window: int) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray((np.arange(window * window) % 256).astype(np.uint8).reshape(window, window)).save(buffer, "PNG")
    return buffer.getvalue()


WINDOW = 8
PNG = png_bytes(WINDOW)
METADATA = b"imgs/0 sample_0.png 0 1 1.8 14 5 5 1.5 1 2\nimgs/0 sample_1.png 1 0 1.8 14 5 5 1.5 1 2\n"


def pathfinder_layout(root, metadata: bytes, first_png: bytes):
    (root / "metadata").mkdir(parents=True)
    (root / "imgs" / "0").mkdir(parents=True)
    (root / "metadata" / "0.npy").write_bytes(metadata)  # the release's metadata "npy" files are text
    (root / "imgs" / "0" / "sample_0.png").write_bytes(first_png)
    (root / "imgs" / "0" / "sample_1.png").write_bytes(PNG)
    return root


@FUZZ
@given(png=mutations(PNG))
@example(png=PNG[:16])  # a PNG cut inside its header chunk: PIL raises ValueError
def test_pathfinder_png(scratch, png):
    root = pathfinder_layout(fresh(scratch), METADATA, png)
    either_succeeds_or_names(root, read_layout, root, WINDOW)


@FUZZ
@given(metadata=mutations(METADATA))
@example(metadata=b"\x80")  # not UTF-8
@example(metadata=b"\x00\t\x00\t\x00\t0")  # a NUL byte in the image path
def test_pathfinder_metadata(scratch, metadata):
    root = pathfinder_layout(fresh(scratch), metadata, PNG)
    either_succeeds_or_names(root, read_layout, root, WINDOW)


def test_pathfinder_seed_layout_is_valid(scratch):
    pixels, labels, _ = read_layout(pathfinder_layout(fresh(scratch), METADATA, PNG), WINDOW)
    assert pixels.shape == (2, WINDOW * WINDOW) and labels.tolist() == [1, 0]


# --------------------------------------------------------------------------- configuration

CONFIGS = {
    ".json": b'{"train": {"steps": 5, "lr": 0.01, "betas": [0.9, 0.98]}, "model": {"num_heads": 2}, "data": {"n": 3}}',
    ".toml": b'[train]\nsteps = 5\nlr = 0.01\nbetas = [0.9, 0.98]\n[model]\nnum_heads = 2\n[data]\nn = 3\n',
    ".yaml": b'train:\n  steps: 5\n  lr: 0.01\n  betas: [0.9, 0.98]\nmodel:\n  num_heads: 2\ndata:\n  n: 3\n',
}


@pytest.mark.parametrize("suffix", list(CONFIGS))
def test_config_seed_files_are_valid(scratch, suffix):
    path = fresh(scratch, suffix)
    path.write_bytes(CONFIGS[suffix])
    assert cfg.load_config_file(path)["train"]["steps"] == 5


@pytest.mark.parametrize("suffix", list(CONFIGS))
@FUZZ
@given(data=st.data())
def test_config_files(scratch, suffix, data):
    path = fresh(scratch, suffix)
    path.write_bytes(data.draw(mutations(CONFIGS[suffix])))
    either_succeeds_or_names(path, cfg.load_config_file, path)


# Values a layer may hold, nested: what any parser of JSON, TOML or YAML can hand over.
LEAVES = st.one_of(st.none(), st.booleans(), st.integers(), st.floats(), st.text(max_size=8))
VALUES = st.recursive(LEAVES, lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner,
                                                                                          max_size=3), max_leaves=8)
SECTION_KEYS = st.sampled_from(["train", "model", "data", "bootstrap", "family", "device", "steps", ""])
FIELD_KEYS = st.sampled_from(["steps", "lr", "betas", "schedule", "grad_clip", "num_heads", "attention",
                              "attention_options", "dropout", "x"])


@FUZZ
@given(layer=st.one_of(VALUES, st.dictionaries(SECTION_KEYS, st.one_of(VALUES, st.dictionaries(FIELD_KEYS, VALUES)))))
def test_config_layers_of_any_shape(layer):
    either_succeeds_or_names("fuzz", cfg.check_layer, layer, "fuzz")


SET_KEYS = st.sampled_from(["train.steps", "train.lr", "train.betas", "train.grad_clip", "train.schedule",
                            "model.num_heads", "model.attention_options", "model.attention_options.height",
                            "data", "data.num_examples", "family", "device", "bootstrap", "train", "x.y", ""])


@FUZZ
@given(key=SET_KEYS, value=st.text(max_size=20), separator=st.sampled_from(["=", "", "==", ".="]))
def test_set_values(key, value, separator):
    either_succeeds_or_names("--set", cfg.parse_set, f"{key}{separator}{value}")


@FUZZ
@given(text=st.text(max_size=40))
def test_set_random_strings(text):
    either_succeeds_or_names("--set", cfg.parse_set, text)


# --------------------------------------------------------------------------- results and state

def valid_record() -> bytes:
    metrics = {"val_accuracy": 0.5, "test_accuracy": 0.25, "best_step": 10, "steps": 20, "train_seconds": 1.0,
               "steps_per_second": 20.0, "tokens_per_second": 100.0, "peak_memory_mb": 10.0,
               "history": [{"step": 10, "train_loss": 0.7, "val_accuracy": 0.5}]}
    record = {"schema": 1, "method": "full", "attention": "full", "task": "t", "task_version": "1", "seed": 0,
              "status": "ok", "reason": None, "metrics": metrics, "flops": None, "diagnostics": {}, "bootstrap": [],
              "suite": "s", "config": {"version": 1}, "config_hash": "abc", "env": {}}
    return json.dumps(record, indent=2).encode()


RECORD = valid_record()


@FUZZ
@given(data=mutations(RECORD))
def test_record_files(scratch, data):
    path = fresh(scratch, ".json")
    path.write_bytes(data)
    either_succeeds_or_names(path, read_record, path)


def test_record_seed_is_valid(scratch):
    path = fresh(scratch, ".json")
    path.write_bytes(RECORD)
    assert read_record(path)["status"] == "ok"


def checkpoint_bytes(scratch) -> bytes:
    path = fresh(scratch, ".pt")
    save_checkpoint(path, {"key": "k", "step": 3, "model": {"w": torch.arange(4.0)}, "rng": rng_state()})
    return path.read_bytes()


@pytest.fixture(scope="module")
def checkpoint(scratch):
    return checkpoint_bytes(scratch)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_checkpoint_files(scratch, checkpoint, data):
    path = fresh(scratch, ".pt")
    path.write_bytes(data.draw(mutations(checkpoint)))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch warns about odd pickle protocols before refusing
        either_succeeds_or_names(path, load_checkpoint, path)


def test_checkpoint_seed_is_valid(scratch, checkpoint):
    path = fresh(scratch, ".pt")
    path.write_bytes(checkpoint)
    assert load_checkpoint(path)["step"] == 3


# --------------------------------------------------------------------------- TFDS array_record

@pytest.fixture(scope="module")
def prepared_imdb(tmp_path_factory):
    """A tiny imdb_reviews prepared as array_record, as a TFDS user would have it."""
    import tensorflow_datasets as tfds
    from test_loaders_real_formats import make_builder, prepare

    root = tmp_path_factory.mktemp("tfds")
    features = {"text": tfds.features.Text(), "label": tfds.features.ClassLabel(num_classes=2)}
    rows = {split: [{"text": f"{split} review {i}".encode(), "label": i % 2} for i in range(12)]
            for split in ("train", "test")}
    prepare(make_builder("imdb_reviews", "1.0.0", features, rows, config="plain_text"), root)
    [location] = (root / "tensorflow_datasets" / "imdb_reviews").glob("*/*/dataset_info.json")
    return root, location.parent


def damaged_copy(scratch, prepared, file_name, data):
    import shutil

    root, location = prepared
    copy = fresh(scratch)
    shutil.copytree(root, copy)
    (copy / location.relative_to(root) / file_name).write_bytes(data)
    return copy


def read_imdb_splits(data_dir):
    from lra import get_task
    from lra.text import read_imdb

    return read_imdb(get_task("text"), data_dir)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_array_record_files(scratch, prepared_imdb, data):
    name = "imdb_reviews-train.array_record-00000-of-00001"
    valid = (prepared_imdb[1] / name).read_bytes()
    damaged = data.draw(st.one_of(st.integers(0, len(valid)).map(lambda n: valid[:n]), mutations(valid[:4096]).map(
        lambda head: head + valid[4096:])))
    copy = damaged_copy(scratch, prepared_imdb, name, damaged)
    either_succeeds_or_names(copy, read_imdb_splits, copy)


@pytest.mark.parametrize("file_name", ["dataset_info.json", "features.json"])
@settings(max_examples=10, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_tfds_metadata_files(scratch, prepared_imdb, file_name, data):
    damaged = data.draw(mutations((prepared_imdb[1] / file_name).read_bytes()))
    copy = damaged_copy(scratch, prepared_imdb, file_name, damaged)
    either_succeeds_or_names(copy, read_imdb_splits, copy)


def test_prepared_imdb_seed_is_valid(prepared_imdb):
    assert len(read_imdb_splits(prepared_imdb[0])["train"][0]) == 12
