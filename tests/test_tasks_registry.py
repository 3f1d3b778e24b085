"""Task registry, parameters, caching and fail-fast behaviour."""

import dataclasses
from pathlib import Path

import numpy as np
import pytest

from bench_common import BenchError
from lra import TASKS, Split, Task, get_task, list_tasks, prepare_task_data
from lra.datadir import default_data_dir
from lra.task import Built

TRAIN_CONFIG_FIELDS = {
    "steps", "batch_size", "lr", "weight_decay", "schedule", "warmup_steps", "grad_clip", "eval_every",
    "eval_batches", "early_stop_patience", "betas", "eps", "time_limit_s",
}
SCHEDULES = {"rsqrt", "cosine", "onecycle", "constant"}
EXPECTED = {
    "listops", "listops-short", "listops-tiny", "text", "text-4k", "retrieval", "image", "pathfinder",
    "pathfinder-easy", "pathfinder-intermediate", "pathx", "mqar", "mqar-classic", "sst2", "mnli", "imdb-subword",
    "listops-shallow", "listops-1k", "mqar-few-keys", "mqar-many-keys", "mqar-4k",
}


def test_every_expected_task_is_registered_once():
    # task names are a contract: these stay; a new task is one catalog declaration and needs no edit here
    assert EXPECTED <= set(list_tasks())
    assert all(isinstance(TASKS.get(name), Task) for name in EXPECTED)
    with pytest.raises(BenchError, match="already registered"):
        TASKS.add("listops", get_task("listops"))


def test_the_lra_readme_says_where_every_task_finds_its_data():
    table = (Path(__file__).resolve().parents[1] / "lra" / "README.md").read_text().split("## Where data goes")[1]
    table = table.split("\n## ")[0]
    missing = [name for name in sorted(EXPECTED) if f"`{name}`" not in table
               and not (name.startswith("pathfinder") and "`pathfinder[-easy,-intermediate]`" in table)]
    assert not missing, f"lra/README.md's data table lacks {missing}"


def test_unknown_task_suggests_close_names():
    with pytest.raises(BenchError, match=r"unknown task 'listop'; did you mean 'listops'"):
        get_task("listop")


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_configs_use_harness_field_names(name):
    from harness.training.model import ModelConfig

    model_fields = {f.name for f in dataclasses.fields(ModelConfig)}
    task = get_task(name)
    for family in ("lra", "uniform"):
        model = task.model_config(family)
        assert set(model) <= model_fields
        ModelConfig(**model)  # constructible: heads divide qkv_dim, known pooling
        assert model["max_seq_len"] == task.seq_len and model["vocab_size"] == task.vocab_size
        assert model["num_classes"] == task.num_classes and model["head"] == task.head
        train = task.train_configs[family]
        assert set(train) <= TRAIN_CONFIG_FIELDS and train["schedule"] in SCHEDULES
    uniform = task.model_configs["uniform"]
    assert (uniform["emb_dim"], uniform["qkv_dim"], uniform["mlp_dim"], uniform["num_layers"], uniform["num_heads"]) == (64, 64, 128, 2, 2)
    assert task.train_configs["uniform"]["lr"] == 1e-4 and task.train_configs["uniform"]["schedule"] == "onecycle"


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_every_task_config_evaluates_at_least_ten_times(name):
    """Learning curves need points: eval_every is the official frequency (lra) or from the budget (None)."""
    task = get_task(name)
    for family in ("lra", "uniform"):
        train = task.train_configs[family]
        every = train.get("eval_every")
        assert every is None or train["steps"] // every >= 10, f"{name} ({family}): {train['steps']} steps, every {every}"


#: The official configs (google-research/long-range-arena: lra_benchmarks/<task>/configs/base_*_config.py,
#: transformer_base.py, and the Transformer's defaults dropout_rate = attention_dropout_rate = 0.1,
#: learn_pos_emb = False). eval_every = eval_frequency: 50; 100; 100; 45000 // 256 = 175;
#: 160000 // 512 = 312; 160000 // 64 = 2500. Written out by hand, not read from lra/catalog.py.
#: task: (layers, heads, emb, qkv, mlp, pooling, positions, dropout, attention_dropout,
#:        batch, lr, weight_decay, schedule, warmup, steps, eval_every, grad_clip)
OFFICIAL_LRA = {
    "listops": (4, 8, 512, 512, 1024, "cls", "sinusoidal", 0.1, 0.1, 32, 0.05, 0.1, "rsqrt", 1000, 5000, 50, None),
    "text": (4, 4, 256, 256, 1024, "cls", "sinusoidal", 0.1, 0.1, 32, 0.05, 0.1, "rsqrt", 8000, 20000, 100, None),
    "retrieval": (4, 4, 128, 128, 512, "cls", "sinusoidal", 0.1, 0.1, 32, 0.05, 0.1, "rsqrt", 8000, 5000, 100, None),
    "image": (1, 8, 128, 64, 128, "cls", "learned", 0.3, 0.2, 256, 5e-4, 0.0, "cosine", 175, 35000, 175, None),
    "pathfinder": (4, 4, 32, 16, 32, "mean", "sinusoidal", 0.2, 0.1, 512, 1e-3, 0.0, "cosine", 312, 62400, 312, None),
    "pathx": (1, 2, 32, 16, 32, "mean", "learned", 0.1, 0.1, 64, 1e-3, 0.0, "cosine", 2500, 500_000, 2500, 1.0),
}
MODEL_KEYS = ("num_layers", "num_heads", "emb_dim", "qkv_dim", "mlp_dim", "pooling", "positions", "dropout",
              "attention_dropout")
TRAIN_KEYS = ("batch_size", "lr", "weight_decay", "schedule", "warmup_steps", "steps", "eval_every", "grad_clip")


@pytest.mark.parametrize("name", sorted(OFFICIAL_LRA))
def test_lra_family_is_the_official_configs(name):
    task = get_task(name)
    model, train = task.model_configs["lra"], task.train_configs["lra"]
    got = tuple(model[k] for k in MODEL_KEYS) + tuple(train[k] for k in TRAIN_KEYS)
    assert dict(zip(MODEL_KEYS + TRAIN_KEYS, got)) == dict(zip(MODEL_KEYS + TRAIN_KEYS, OFFICIAL_LRA[name]))


def test_lra_configs_follow_the_official_code():
    pathx = get_task("pathx")
    assert pathx.seq_len == 128 * 128
    assert get_task("retrieval").head == "dual" and get_task("mqar").head == "token"
    assert get_task("image").pad_id is None and get_task("text").pad_id == 0


def test_params_are_validated_by_the_type_of_their_default():
    task = get_task("listops-tiny")
    params = task.check_params({"num_examples": 300, "seed": 3})
    assert params["num_examples"] == 300 and params["seed"] == 3 and params["max_length"] == 256
    with pytest.raises(BenchError, match=r"unknown option 'num_example' \(did you mean 'num_examples'\?\)"):
        task.check_params({"num_example": 10})
    # A string is not a number, whatever it spells (`--set data.num_examples=300` arrives as 300).
    for text in ("many", "300"):
        with pytest.raises(BenchError, match=rf"task 'listops-tiny' param 'num_examples': expected an integer, got '{text}'"):
            task.check_params({"num_examples": text})
    with pytest.raises(BenchError, match=r"param 'num_examples': expected an integer, got True"):
        task.check_params({"num_examples": True})
    with pytest.raises(BenchError, match=r"param 'val_fraction': expected a number, got '0.2'"):
        task.check_params({"val_fraction": "0.2"})
    assert task.check_params({"val_fraction": 0.2})["val_fraction"] == 0.2
    with pytest.raises(BenchError, match="min_length < max_length"):
        task.check_params({"min_length": 300})


def test_param_dependent_shapes_reach_the_model_config():
    task = get_task("mqar")
    model = task.model_config("lra", {"seq_len": 128, "num_pairs": 16, "num_keys": 32, "num_values": 8})
    assert model["max_seq_len"] == 128 and model["num_classes"] == 8 and model["vocab_size"] == 2 + 32 * 8 + 32


def test_second_prepare_reads_the_cache(tmp_path: Path, monkeypatch):
    params = {"num_examples": 60}
    first = prepare_task_data("listops-tiny", tmp_path, params)
    assert isinstance(first["train"].inputs, np.memmap)

    def fail(*args, **kwargs):
        raise AssertionError("regenerated although cached")

    task = get_task("listops-tiny")
    monkeypatch.setattr(type(task.loader), "build", fail)
    second = prepare_task_data("listops-tiny", tmp_path, params)
    for name in ("train", "val", "test"):
        assert np.array_equal(first[name].inputs, second[name].inputs)
        assert np.array_equal(first[name].targets, second[name].targets)


def test_interrupted_cache_write_keeps_existing_cache(tmp_path: Path, monkeypatch):
    prepare_task_data("mqar", tmp_path, {"num_examples": 30, "seq_len": 64, "num_pairs": 8})
    root = tmp_path / "cache" / "mqar"
    entries = sorted(root.iterdir())
    before = {p: p.read_bytes() for entry in entries for p in entry.iterdir()}

    import lra.cache

    real_save, calls = np.save, []

    def failing_save(path, array):
        calls.append(path)
        if len(calls) == 3:
            raise OSError("disk full")
        real_save(path, array)

    monkeypatch.setattr(lra.cache.np, "save", failing_save)
    with pytest.raises(OSError, match="disk full"):
        prepare_task_data("mqar", tmp_path, {"num_examples": 31, "seq_len": 64, "num_pairs": 8})
    assert sorted(root.iterdir()) == entries  # neither a partial entry nor a staging directory left
    assert {p: p.read_bytes() for entry in entries for p in entry.iterdir()} == before


def test_out_of_range_labels_are_rejected_before_caching(tmp_path: Path, monkeypatch):
    task = get_task("listops-tiny")

    def bad_labels(self, task, data_dir, params):
        split = Split(np.ones((3, 256), np.int32), np.array([0, 1, 10]))
        return Built({"train": split, "val": split, "test": split})

    monkeypatch.setattr(type(task.loader), "build", bad_labels)
    with pytest.raises(BenchError, match=r"labels outside 0..9"):
        task.prepare(tmp_path, {"num_examples": 50})
    assert not (tmp_path / "cache" / "listops-tiny").exists() or not any((tmp_path / "cache" / "listops-tiny").iterdir())


def test_default_data_dir_honours_the_environment(monkeypatch, tmp_path: Path):
    monkeypatch.setenv("TREEFORMER_BENCH_DATA", str(tmp_path))
    assert default_data_dir() == tmp_path
    monkeypatch.delenv("TREEFORMER_BENCH_DATA")
    assert "treeformer-bench" in str(default_data_dir())


@pytest.mark.parametrize(
    "name, expected",
    [
        ("text", r"task 'text': TFDS dataset 'imdb_reviews' is not prepared under .*tensorflow_datasets.*download_and_prepare\(file_format='array_record'\).*aclImdb"),
        ("image", r"task 'image': TFDS dataset 'cifar10' is not prepared"),
        ("sst2", r"task 'sst2': TFDS dataset 'glue/sst2' is not prepared"),
        ("retrieval", r"task 'retrieval': missing new_aan_pairs.train.tsv, .* in .*lra_release/tsv_data"),
    ],
)
def test_missing_real_data_fails_fast_and_says_where(tmp_path: Path, name: str, expected: str):
    with pytest.raises(BenchError, match=expected) as error:
        prepare_task_data(name, tmp_path)


def test_official_listops_files_are_preferred_over_generation(tmp_path: Path):
    from lra.listops import generate_examples, write_split_files

    rows = generate_examples(9, seed=1, min_length=500, max_length=2000)
    write_split_files(tmp_path / "lra_release" / "listops-1000", {"train": rows[:5], "val": rows[5:7], "test": rows[7:]})
    splits = prepare_task_data("listops", tmp_path)
    assert [len(splits[s]) for s in ("train", "val", "test")] == [5, 2, 2]
    assert splits["val"].targets.tolist() == [value for _, value in rows[5:7]]
    assert not (tmp_path / "generated").exists()


def test_official_pathfinder_directory_is_preferred_over_generation(tmp_path: Path):
    from lra.pathfinder import generate_layout, preset

    root = tmp_path / "lra_release" / "pathfinder32" / "curv_baseline"
    generate_layout(root, preset(32, "easy"), 20, seed=2, workers=1)
    splits = prepare_task_data("pathfinder-easy", tmp_path)
    assert [len(splits[s]) for s in ("train", "val", "test")] == [16, 2, 2]
    assert splits["train"].inputs.shape == (16, 1024) and splits["train"].inputs.dtype == np.uint8
    assert not (tmp_path / "generated").exists()


def test_listing_tasks_imports_nothing_heavy():
    import subprocess
    import sys

    code = (
        "import sys, lra; lra.list_tasks(); "
        "print(sorted(m for m in ('tensorflow_datasets', 'sentencepiece', 'torch', 'harness', 'methods') if m in sys.modules))"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=Path(__file__).parents[1])
    assert result.stdout.strip() == "[]"


def test_few_and_many_key_recall_differ_only_in_the_key_count():
    """The quick suite reports them side by side: any other difference would confound the comparison."""
    few, many = get_task("mqar-few-keys"), get_task("mqar-many-keys")
    assert few.params["num_keys"] < many.params["num_keys"]
    assert {k: v for k, v in few.params.items() if k != "num_keys"} == {
        k: v for k, v in many.params.items() if k != "num_keys"}
    assert few.num_classes == many.num_classes and few.seq_len == many.seq_len
    assert many.params["num_keys"] > 2 ** 5  # more keys than the default tree (height 5) has leaves


def test_calibrated_variants_keep_their_lengths():
    """Generated examples fit the declared length (nothing is cut), and the long variants are long."""
    from lra.listops import generate_examples, tokenize

    shallow = get_task("listops-shallow")
    p = shallow.params
    for text, _ in generate_examples(200, 0, p["min_length"], p["max_length"], p["max_depth"], p["max_args"]):
        assert p["min_length"] < len(tokenize(Path("x"), 1, text)) < shallow.seq_len
    long = get_task("listops-1k")
    assert long.seq_len >= 1024 and get_task("mqar-4k").seq_len >= 4096
    assert long.params["min_length"] >= long.seq_len // 2  # long trees, not short ones padded to 1024
