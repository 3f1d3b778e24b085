"""Real-data loaders read small files written in exactly the official formats (nothing downloads).

TFDS datasets are prepared here as array_record by builders defined in this file under the
catalog names, so the loaders read them as they would read `download_and_prepare` output.
"""

import io
import shutil
import tarfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from bench_common import BenchError
from lra import get_task, prepare_task_data
from lra.archive import extract_release
from lra.image import to_grayscale
from lra.mqar import FIRST_ID, generate

tfds = pytest.importorskip("tensorflow_datasets")

IMDB_ROWS = {
    "train": [(b"a fine film \xc3\xa9", 1), (b"dull", 0), (b"great acting", 1), (b"bad plot", 0), (b"loved it", 1)],
    "test": [(b"not good", 0), (b"wonderful", 1), (b"boring", 0)],
}


def make_builder(dataset_name, version, features, splits, config=None):
    """A GeneratorBasedBuilder writing `splits` ({split: [example dict]}) under `dataset_name`[/config]."""

    class LocalDataset(tfds.core.GeneratorBasedBuilder, skip_registration=True):
        name = dataset_name
        VERSION = tfds.core.Version(version)
        BUILDER_CONFIGS = [tfds.core.BuilderConfig(name=config)] if config else []

        def _info(self):
            return tfds.core.DatasetInfo(builder=self, features=tfds.features.FeaturesDict(features))

        def _split_generators(self, dl_manager):
            return {split: self._generate_examples(rows) for split, rows in splits.items()}

        def _generate_examples(self, rows):
            for index, row in enumerate(rows):
                yield index, row

    return LocalDataset


def prepare(builder_cls, data_dir: Path) -> None:
    builder_cls(data_dir=str(data_dir / "tensorflow_datasets"), file_format="array_record").download_and_prepare()


@pytest.fixture(scope="module")
def tfds_data(tmp_path_factory):
    root = tmp_path_factory.mktemp("data")
    text = {"text": tfds.features.Text(), "label": tfds.features.ClassLabel(num_classes=2)}
    prepare(make_builder("imdb_reviews", "1.0.0", text, {
        split: [{"text": t, "label": y} for t, y in rows] for split, rows in IMDB_ROWS.items()
    }, config="plain_text"), root)
    rng = np.random.default_rng(0)
    images = {s: [rng.integers(0, 256, (32, 32, 3), dtype=np.uint8) for _ in range(n)] for s, n in (("train", 10), ("test", 4))}
    prepare(make_builder("cifar10", "3.0.2", {
        "image": tfds.features.Image(shape=(32, 32, 3)), "label": tfds.features.ClassLabel(num_classes=10),
    }, {s: [{"image": Image.fromarray(im), "label": i % 10} for i, im in enumerate(ims)] for s, ims in images.items()}), root)
    sentences = ["the film is fine", "a dull story", "great fun", "weak ending", "strong cast", "bad pacing"] * 3
    prepare(make_builder("glue", "2.0.0", {
        "sentence": tfds.features.Text(), "label": tfds.features.ClassLabel(num_classes=2), "idx": np.int32,
    }, {
        "train": [{"sentence": s, "label": i % 2, "idx": i} for i, s in enumerate(sentences)],
        "validation": [{"sentence": s, "label": i % 2, "idx": i} for i, s in enumerate(sentences[:4])],
    }, config="sst2"), root)
    prepare(make_builder("glue", "2.0.0", {
        "premise": tfds.features.Text(), "hypothesis": tfds.features.Text(),
        "label": tfds.features.ClassLabel(num_classes=3), "idx": np.int32,
    }, {
        "train": [{"premise": s, "hypothesis": t, "label": i % 3, "idx": i} for i, (s, t) in enumerate(zip(sentences, sentences[1:]))],
        "validation_matched": [{"premise": "a dull story", "hypothesis": "great fun", "label": 2, "idx": 0}],
    }, config="mnli"), root)
    return root, images


def byte_ids(text: bytes, length: int) -> list:
    ids = [b + 1 for b in text[:length]]
    return ids + [0] * (length - len(ids))


def test_text_reads_prepared_imdb_as_official_bytes(tfds_data):
    root, _ = tfds_data
    splits = prepare_task_data("text", root)
    train, val, test = splits["train"], splits["val"], splits["test"]
    assert train.inputs.shape == (5, 1000) and val.inputs.shape == (3, 1000)
    expected = {(tuple(byte_ids(t, 1000)), y) for t, y in IMDB_ROWS["train"]}
    assert {(tuple(row), int(y)) for row, y in zip(np.asarray(train.inputs).tolist(), train.targets)} == expected
    assert np.array_equal(val.inputs, test.inputs)  # official: IMDb test doubles as validation


def test_text_validation_can_come_from_train(tfds_data):
    root, _ = tfds_data
    splits = prepare_task_data("text", root, {"validation": "train"})
    assert len(splits["train"]) + len(splits["val"]) == 5 and len(splits["test"]) == 3


def test_text_reads_the_acl_imdb_directory(tmp_path: Path):
    for split, rows in IMDB_ROWS.items():
        for index, (text, label) in enumerate(rows):
            directory = tmp_path / "aclImdb" / split / ("pos" if label else "neg")
            directory.mkdir(parents=True, exist_ok=True)
            (directory / f"{index}_7.txt").write_bytes(text)
    splits = prepare_task_data("text-4k", tmp_path)
    assert splits["train"].inputs.shape == (5, 4000)
    assert sorted(splits["test"].targets.tolist()) == [0, 0, 1]
    assert np.asarray(splits["train"].inputs)[0, :4].tolist() == byte_ids(b"dull", 4)  # neg files first, sorted by name (1_7 before 3_7)


def test_image_is_grayscale_cifar_with_official_splits(tfds_data):
    root, images = tfds_data
    splits = prepare_task_data("image", root)
    assert [len(splits[s]) for s in ("train", "val", "test")] == [9, 1, 4]
    assert splits["train"].inputs.shape == (9, 1024) and splits["train"].inputs.max() <= 255
    # TFDS shuffles on preparation: compare as a set of (pixels, label) against our own conversion.
    wanted = {(to_grayscale(im[None])[0].tobytes(), i % 10) for i, im in enumerate(images["test"])}
    got = {(np.asarray(row, dtype=np.uint8).tobytes(), int(y)) for row, y in zip(splits["test"].inputs, splits["test"].targets)}
    assert got == wanted


def test_grayscale_matches_tensorflow_weights():
    pixel = np.array([[[[255, 0, 0], [0, 255, 0], [0, 0, 255], [255, 255, 255]]]], dtype=np.uint8)
    assert to_grayscale(pixel).ravel().tolist() == [76, 149, 29, 255]


def test_sst2_trains_and_caches_a_subword_tokenizer(tfds_data):
    root, _ = tfds_data
    params = {"vocab_size": 40, "val_fraction": 0.2}
    splits = prepare_task_data("sst2", root, params)
    assert len(splits["test"]) == 4 and len(splits["train"]) + len(splits["val"]) == 18
    assert splits["train"].inputs.shape[1] == 128 and 0 < splits["train"].inputs.max() < 40
    models = list((root / "tokenizers").glob("sst2-*.model"))
    assert len(models) == 1


def test_mnli_concatenates_pairs_with_a_separator(tfds_data):
    root, _ = tfds_data
    splits = prepare_task_data("mnli", root, {"vocab_size": 40, "val_fraction": 0.2})
    row = np.asarray(splits["test"].inputs[0])
    assert (row == 2).sum() == 1  # one <sep> between premise and hypothesis
    assert splits["test"].targets.tolist() == [2]


def test_prepared_tfrecord_dataset_is_reported(tmp_path: Path):
    location = tmp_path / "tensorflow_datasets" / "cifar10" / "3.0.2"
    location.mkdir(parents=True)
    (location / "dataset_info.json").write_text("{}")
    (location / "cifar10-train.tfrecord-00000-of-00001").write_bytes(b"")
    with pytest.raises(BenchError, match="prepared as tfrecord, which needs TensorFlow"):
        prepare_task_data("image", tmp_path)


def write_aan(directory: Path, rows: dict) -> None:
    directory.mkdir(parents=True)
    for name, lines in rows.items():
        (directory / f"new_aan_pairs.{name}.tsv").write_text("".join(line + "\n" for line in lines))


def test_retrieval_reads_headless_aan_tsvs_as_dual_inputs(tmp_path: Path):
    directory = tmp_path / "lra_release" / "tsv_data"
    long_text = "x" * 5000
    write_aan(directory, {
        "train": ["1.0\tP1\tP2\tpaper one\tpaper two", f"0\tP3\tP4\t{long_text}\tshort"],
        "eval": ["0.0\tP5\tP6\tfive\tsix"],
        "test": ["1\tP7\tP8\tseven\teight"],
    })
    splits = prepare_task_data("retrieval", tmp_path)
    train = splits["train"]
    assert train.inputs.shape == (2, 2, 4000) and train.targets.tolist() == [1, 0]
    assert np.asarray(train.inputs)[0, 1, :9].tolist() == byte_ids(b"paper two", 9)
    assert (np.asarray(train.inputs)[1, 0] != 0).all()  # cut at 4000 bytes


@pytest.mark.parametrize(
    "line, message",
    [
        ("1\tP1\tP2\tonly four", r"new_aan_pairs.train.tsv:2: expected 5 tab-separated columns, got 4"),
        ("yes\tP1\tP2\ta\tb", r"new_aan_pairs.train.tsv:2: label 'yes' is not an integer"),
        ("0.5\tP1\tP2\ta\tb", r"new_aan_pairs.train.tsv:2: label '0.5' is not an integer"),
        ("2\tP1\tP2\ta\tb", r"new_aan_pairs.train.tsv:2: label 2 out of range 0..1"),
    ],
)
def test_retrieval_bad_rows(tmp_path: Path, line: str, message: str):
    write_aan(tmp_path / "lra_release" / "tsv_data", {
        "train": ["1\tP1\tP2\ta\tb", line], "eval": ["0\tP\tQ\ta\tb"], "test": ["0\tP\tQ\ta\tb"],
    })
    with pytest.raises(BenchError, match=message):
        prepare_task_data("retrieval", tmp_path)


def add_member(tar: tarfile.TarFile, name: str, data: bytes = b"x", kind=tarfile.REGTYPE, link: str = "") -> None:
    info = tarfile.TarInfo(name)
    info.type, info.linkname, info.size = kind, link, len(data) if kind == tarfile.REGTYPE else 0
    tar.addfile(info, io.BytesIO(data) if kind == tarfile.REGTYPE else None)


def test_archive_extracts_a_clean_release(tmp_path: Path):
    archive = tmp_path / "lra_release.gz"
    with tarfile.open(archive, "w:gz") as tar:
        add_member(tar, "lra_release/listops-1000/basic_val.tsv", b"Source\tTarget\n")
        add_member(tar, "lra_release/tsv_data/link.tsv", kind=tarfile.SYMTYPE, link="../listops-1000/basic_val.tsv")
    target = extract_release(archive, tmp_path / "data")
    assert (target / "lra_release" / "listops-1000" / "basic_val.tsv").read_text() == "Source\tTarget\n"


@pytest.mark.parametrize(
    "name, kind, link, reason",
    [
        ("/etc/evil", tarfile.REGTYPE, "", "absolute path"),
        ("lra_release/../../evil", tarfile.REGTYPE, "", "'..' in path"),
        ("lra_release/escape", tarfile.SYMTYPE, "../../outside", "points outside"),
        ("lra_release/abs_link", tarfile.SYMTYPE, "/etc/passwd", "points outside"),
        ("lra_release/hard", tarfile.LNKTYPE, "../elsewhere", "points outside"),
        ("lra_release/fifo", tarfile.FIFOTYPE, "", "not a regular file"),
    ],
)
def test_archive_refuses_unsafe_members(tmp_path: Path, name, kind, link, reason):
    archive = tmp_path / "crafted.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        add_member(tar, "lra_release/ok.txt")
        add_member(tar, name, kind=kind, link=link)
    with pytest.raises(BenchError, match=rf"refusing member '{name}': .*{reason}"):
        extract_release(archive, tmp_path / "data")
    assert not (tmp_path / "data" / "lra_release" / "ok.txt").exists()  # checked before writing anything


@pytest.mark.parametrize("layout", ["single", "classic"])
def test_mqar_targets_are_the_values_bound_to_queried_keys(layout):
    params = dict(get_task("mqar").params, layout=layout, num_keys=16, num_values=8, num_pairs=6, seq_len=40)
    split = generate(params, 20, seed=1)
    single = layout == "single"
    for row, target in zip(split.inputs, split.targets):
        if single:
            pairs = {(t - FIRST_ID) // 8: (t - FIRST_ID) % 8 for t in row[:6]}
        else:
            pairs = {k - FIRST_ID: v - FIRST_ID - 16 for k, v in zip(row[0:12:2], row[1:12:2])}
        assert len(pairs) == 6  # distinct keys
        queried = np.nonzero(target != -100)[0]
        assert len(queried) == 6 and queried.min() >= (6 if single else 12)
        for position in queried:
            key = row[position] - FIRST_ID - (16 * 8 if single else 0)
            assert target[position] == pairs[key]
            if not single and position + 1 < len(row):
                assert row[position + 1] == 1  # the value is never next to its query


def test_mqar_rejects_impossible_params():
    with pytest.raises(BenchError, match="too short"):
        get_task("mqar").check_params({"seq_len": 60, "num_pairs": 48})
    with pytest.raises(BenchError, match="num_pairs <= num_keys"):
        get_task("mqar-classic").check_params({"num_pairs": 70})


def test_imdb_subword_reads_acl_imdb_and_reuses_its_tokenizer(tmp_path: Path):
    for split, rows in IMDB_ROWS.items():
        for index, (text, label) in enumerate(rows):
            directory = tmp_path / "aclImdb" / split / ("pos" if label else "neg")
            directory.mkdir(parents=True, exist_ok=True)
            (directory / f"{index}_7.txt").write_bytes(text * 3)
    params = {"vocab_size": 30, "validation": "train"}
    splits = prepare_task_data("imdb-subword", tmp_path, params)
    assert splits["train"].inputs.shape[1] == 1024 and splits["train"].inputs.max() < 30
    model = next((tmp_path / "tokenizers").glob("imdb-subword-*.model"))
    stamp = model.stat().st_mtime_ns
    shutil.rmtree(tmp_path / "cache")  # drop the arrays, keep the tokenizer
    again = prepare_task_data("imdb-subword", tmp_path, params)
    assert model.stat().st_mtime_ns == stamp
    assert np.array_equal(again["test"].inputs, splits["test"].inputs)
