"""Every record names the exact data it used, and no cache serves old data (issues 14 and 15).

Fixtures are written in the official layouts (as tests/test_loaders_real_formats.py): ListOps
`basic_*.tsv` with the `Source<TAB>Target` header, headless AAN TSVs, Pathfinder `metadata/*.npy`
text lines beside `imgs/<batch>/sample_<i>.png`, aclImdb review files, a TFDS array_record dataset.
"""

import dataclasses
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from bench_common import BenchError
from lra import get_task
from lra.listops import generate_examples, write_split_files

LISTOPS_PARAMS = {"min_length": 100, "max_length": 300}


def later_mtime(path: Path) -> None:
    """Filesystem clocks tick every few ms, so two writes in one test can share an mtime; a file
    replaced in real life is replaced later. Moves the mtime one second on, as that would."""
    status = path.stat()
    os.utime(path, ns=(status.st_atime_ns, status.st_mtime_ns + 10**9))


def write_official_listops(data_dir: Path, seed: int) -> Path:
    rows = generate_examples(9, seed=seed, min_length=100, max_length=300)
    directory = data_dir / "lra_release" / "listops-1000"
    write_split_files(directory, {"train": rows[:5], "val": rows[5:7], "test": rows[7:]})
    return directory


def write_aan(data_dir: Path, labels: list[int]) -> Path:
    directory = data_dir / "lra_release" / "tsv_data"
    directory.mkdir(parents=True, exist_ok=True)
    for name in ("train", "eval", "test"):
        lines = [f"{label}.0\tP{i}\tQ{i}\tpaper {i}\tcited {i}\n" for i, label in enumerate(labels)]
        (directory / f"new_aan_pairs.{name}.tsv").write_text("".join(lines))
    return directory


def write_pathfinder(root: Path, batches: int, per_batch: int = 10, empty: tuple = ()) -> None:
    """Official layout; `empty` lists (batch, index) whose PNG is an empty file."""
    rng = np.random.default_rng(0)
    (root / "metadata").mkdir(parents=True, exist_ok=True)
    for batch in range(batches):
        (root / "imgs" / str(batch)).mkdir(parents=True, exist_ok=True)
        lines = []
        for index in range(per_batch):
            path = root / "imgs" / str(batch) / f"sample_{index}.png"
            if (batch, index) in empty:
                path.write_bytes(b"")
            else:
                Image.fromarray(rng.integers(0, 256, (32, 32), dtype=np.uint8)).save(path)
            lines.append(f"imgs/{batch} sample_{index}.png {index} {index % 2} 1.0 6 2 2 0.5 1 1")
        (root / "metadata" / f"{batch}.npy").write_text("\n".join(lines) + "\n")


def planned_hash(data_dir: Path, task: str, sets: list) -> str:
    from harness.sweep.driver import SweepRequest, resolve_specs

    request = SweepRequest(suite="smoke", methods=["full"], tasks=[task], sets=sets, data_dir=data_dir,
                           out=data_dir / "out")
    spec, = resolve_specs(request)
    return spec.config_hash


LISTOPS_SETS = ["data.min_length=100", "data.max_length=300"]


# --------------------------------------------------------------------------- stale cache


def test_replaced_listops_files_rebuild_the_cache_and_change_the_config_hash(tmp_path):
    task = get_task("listops")
    directory = write_official_listops(tmp_path, seed=1)
    first = task.prepare_data(tmp_path, LISTOPS_PARAMS)
    first_hash = planned_hash(tmp_path, "listops", LISTOPS_SETS)
    assert planned_hash(tmp_path, "listops", LISTOPS_SETS) == first_hash  # stable while nothing changes
    old_test = np.array(first.splits["test"].inputs)

    write_official_listops(tmp_path, seed=2)  # the official files replaced by other trees
    for path in directory.iterdir():
        later_mtime(path)
    second = task.prepare_data(tmp_path, LISTOPS_PARAMS)
    rows = generate_examples(9, seed=2, min_length=100, max_length=300)
    assert second.splits["test"].targets.tolist() == [value for _, value in rows[7:]]
    assert not np.array_equal(np.array(second.splits["test"].inputs), old_test)
    assert second.data["fingerprint"] != first.data["fingerprint"]
    assert planned_hash(tmp_path, "listops", LISTOPS_SETS) != first_hash


def test_flipped_retrieval_labels_rebuild_the_cache(tmp_path):
    """Same sizes, same layout: only the content and the mtime change."""
    task = get_task("retrieval")
    directory = write_aan(tmp_path, [1, 0, 1])
    assert task.prepare(tmp_path)["train"].targets.tolist() == [1, 0, 1]
    write_aan(tmp_path, [0, 1, 0])
    later_mtime(directory / "new_aan_pairs.train.tsv")
    assert task.prepare(tmp_path)["train"].targets.tolist() == [0, 1, 0]


def test_deleted_pathfinder_metadata_file_rebuilds_the_cache(tmp_path):
    task = get_task("pathfinder-easy")
    root = tmp_path / "lra_release" / "pathfinder32" / "curv_baseline"
    write_pathfinder(root, batches=2)
    assert sum(task.prepare_data(tmp_path).data["sizes"].values()) == 20
    (root / "metadata" / "1.npy").unlink()
    assert sum(task.prepare_data(tmp_path).data["sizes"].values()) == 10


def test_generated_data_is_named_by_its_recipe(tmp_path):
    task = get_task("listops-tiny")
    before = task.data_source(tmp_path, {"num_examples": 60})  # nothing generated yet
    prepared = task.prepare_data(tmp_path, {"num_examples": 60})
    assert prepared.data["fingerprint"] == before["fingerprint"]  # so a dry run needs no data
    assert task.data_source(tmp_path, {"num_examples": 61})["fingerprint"] != before["fingerprint"]


# --------------------------------------------------------------------------- damaged cache


def _damage_truncated_array(entry: Path) -> Path:
    path = entry / "train_inputs.npy"
    path.write_bytes(path.read_bytes()[:-100])
    return path


def _damage_missing_meta(entry: Path) -> Path:
    path = entry / "meta.json"
    path.unlink()
    return path


def _damage_garbled_meta(entry: Path) -> Path:
    path = entry / "meta.json"
    path.write_text("{not json")
    return path


def _damage_missing_array(entry: Path) -> Path:
    path = entry / "test_targets.npy"
    path.unlink()
    return path


@pytest.mark.parametrize("damage", [_damage_truncated_array, _damage_missing_meta, _damage_garbled_meta,
                                    _damage_missing_array])
def test_a_damaged_cache_entry_is_rebuilt_with_a_message_naming_the_file(tmp_path, capsys, damage):
    params = {"num_examples": 30, "seq_len": 64, "num_pairs": 8}
    task = get_task("mqar")
    original = {name: np.array(split.inputs) for name, split in task.prepare(tmp_path, params).items()}
    entry, = (tmp_path / "cache" / "mqar").iterdir()
    damaged = damage(entry)
    capsys.readouterr()
    rebuilt = task.prepare(tmp_path, params)
    assert f"{damaged} is damaged" in capsys.readouterr().err
    assert all(np.array_equal(np.array(rebuilt[name].inputs), original[name]) for name in original)
    assert sorted(p.name for p in (tmp_path / "cache" / "mqar").iterdir()) == [entry.name]  # no leftovers
    capsys.readouterr()
    task.prepare(tmp_path, params)
    assert capsys.readouterr().err == ""  # the rebuilt entry is whole


# --------------------------------------------------------------------------- the data block


def test_data_block_of_generated_data(tmp_path):
    prepared = get_task("listops-tiny").prepare_data(tmp_path, {"num_examples": 60})
    data = prepared.data
    assert data["source"] == "generated" and data["sizes"] == {"train": 48, "val": 6, "test": 6}
    assert Path(data["root"]).parent == tmp_path / "generated" / "listops-tiny"
    assert (Path(data["root"]) / "basic_train.tsv").is_file()


def test_data_block_of_official_files_gives_the_sizes_read_not_the_params(tmp_path):
    directory = write_official_listops(tmp_path, seed=1)
    data = get_task("listops").prepare_data(tmp_path, LISTOPS_PARAMS).data
    assert data["source"] == "official" and data["root"] == str(directory)
    assert data["sizes"] == {"train": 5, "val": 2, "test": 2}  # though num_examples says 100000


def test_data_block_of_a_tfds_dataset(tmp_path):
    from test_loaders_real_formats import make_builder, prepare, tfds

    rng = np.random.default_rng(0)
    images = {s: [rng.integers(0, 256, (32, 32, 3), dtype=np.uint8) for _ in range(n)] for s, n in (("train", 10), ("test", 4))}
    prepare(make_builder("cifar10", "3.0.2", {
        "image": tfds.features.Image(shape=(32, 32, 3)), "label": tfds.features.ClassLabel(num_classes=10),
    }, {s: [{"image": Image.fromarray(im), "label": i % 10} for i, im in enumerate(ims)] for s, ims in images.items()}), tmp_path)
    data = get_task("image").prepare_data(tmp_path).data
    assert data["source"] == "tfds" and data["root"] == str(tmp_path / "tensorflow_datasets" / "cifar10" / "3.0.2")
    assert data["sizes"] == {"train": 9, "val": 1, "test": 4}


def test_data_block_counts_empty_pathfinder_images(tmp_path):
    root = tmp_path / "lra_release" / "pathfinder32" / "curv_baseline"
    write_pathfinder(root, batches=2, empty=((0, 3), (1, 7)))
    data = get_task("pathfinder-easy").prepare_data(tmp_path).data
    assert data["source"] == "official" and data["empty_images_skipped"] == 2
    assert sum(data["sizes"].values()) == 18


def test_acl_imdb_reviews_are_stripped_as_tfds_does(tmp_path):
    """TFDS imdb_reviews prepares each file as `read().strip()`: b' Dull\\n' is 4 bytes, not 6."""
    for split in ("train", "test"):
        for label, polarity in enumerate(("neg", "pos")):
            directory = tmp_path / "aclImdb" / split / polarity
            directory.mkdir(parents=True)
            (directory / "0_1.txt").write_bytes(b" Dull\n" if label == 0 else b"\tgreat \r\n")
    prepared = get_task("text").prepare_data(tmp_path)
    rows = np.asarray(prepared.splits["train"].inputs)
    assert rows[0, :6].tolist() == [ord(c) + 1 for c in "Dull"] + [0, 0]
    assert rows[1, :6].tolist() == [ord(c) + 1 for c in "great"] + [0]
    assert prepared.data["source"] == "files" and prepared.data["root"] == str(tmp_path / "aclImdb")


# --------------------------------------------------------------------------- records and dry run


def cli_lines(capsys, args: list) -> list:
    from harness.cli import main

    capsys.readouterr()
    assert main(args) == 0
    return [json.loads(line) for line in capsys.readouterr().out.splitlines() if line.startswith("{")]


def test_dry_run_plans_exactly_what_a_real_run_records(tmp_path, capsys):
    from harness.sweep.records import read_record, record_path

    write_official_listops(tmp_path / "data", seed=1)

    def run_args(task: str, sets: list) -> list:
        return ["run", "--suite", "smoke", "--methods", "full", "--tasks", task, "--device", "cpu",
                "--out", str(tmp_path / "out"), "--data-dir", str(tmp_path / "data"),
                *[f"--set={item}" for item in ["train.steps=2", "train.eval_every=1", *sets]]]

    for args in (run_args("listops-tiny", ["data.num_examples=60"]), run_args("listops", LISTOPS_SETS)):
        planned, = cli_lines(capsys, [*args, "--dry-run"])
        assert planned["record_exists"] is False
        assert not (tmp_path / "out" / "records" / planned["task"]).exists()  # nothing ran
        assert not (tmp_path / "data" / "cache" / planned["task"]).exists()  # nothing was prepared
        cli_lines(capsys, args)
        record = read_record(record_path(tmp_path / "out", planned["task"], "full", 0))
        assert record["status"] == "ok", record["reason"]
        assert record["config"] == planned["config"] and record["config_hash"] == planned["config_hash"]
        assert record["data"]["fingerprint"] == planned["config"]["data_source"]["fingerprint"]
        again, = cli_lines(capsys, [*args, "--dry-run"])
        assert again["record_exists"] is True and again["config_hash"] == planned["config_hash"]
    official = read_record(record_path(tmp_path / "out", "listops", "full", 0))
    assert official["config"]["data"]["num_examples"] == 100_000  # the param, which official files ignore
    assert official["data"]["source"] == "official"
    assert official["data"]["sizes"] == {"train": 5, "val": 2, "test": 2}  # what was used
    tiny = read_record(record_path(tmp_path / "out", "listops-tiny", "full", 0))
    assert tiny["data"]["source"] == "generated" and tiny["data"]["sizes"] == {"train": 48, "val": 6, "test": 6}


def test_data_changed_after_planning_fails_the_run_instead_of_mislabelling_it(tmp_path):
    from harness.sweep.driver import SweepRequest, resolve_specs, run_sweep
    from harness.sweep.executors import LocalExecutor

    directory = write_aan(tmp_path, [1, 0, 1, 0])
    request = SweepRequest(suite="smoke", methods=["full"], tasks=["retrieval"], data_dir=tmp_path,
                           out=tmp_path / "out", sets=["train.steps=1"])
    specs = resolve_specs(request)
    write_aan(tmp_path, [0, 0, 0, 0])
    later_mtime(directory / "new_aan_pairs.test.tsv")
    record, = run_sweep(specs, request.out, LocalExecutor())
    assert record["status"] == "error" and "data changed since this run was planned" in record["reason"]
    assert record["data"]["fingerprint"] != specs[0].config["data_source"]["fingerprint"]  # says what it found


# --------------------------------------------------------------------------- suites


def test_a_task_the_suite_does_not_list_runs_with_its_generic_settings(tmp_path, capsys):
    lines = cli_lines(capsys, ["run", "--suite", "smoke", "--tasks", "listops", "--methods", "full", "--device", "cpu",
                               "--out", str(tmp_path / "out"), "--data-dir", str(tmp_path), "--dry-run"])
    config = lines[0]["config"]
    assert config["data"] == get_task("listops").check_params({})  # no MQAR settings leaked in
    assert config["train"]["steps"] == 20 and config["model"]["emb_dim"] == 32  # the suite's generic ones
    mqar, = cli_lines(capsys, ["run", "--suite", "smoke", "--methods", "full", "--device", "cpu",
                               "--out", str(tmp_path / "out"), "--data-dir", str(tmp_path), "--dry-run"])
    assert mqar["config"]["data"]["seq_len"] == 64 and mqar["config"]["data"]["num_pairs"] == 8


def test_suites_keep_data_params_per_task():
    from harness.config.suites import Suite, plain, register_suite

    with pytest.raises(BenchError, match="data params are task-specific; put them in task_overrides"):
        register_suite(Suite(name="bad", description="", tasks=("mqar",), methods=(plain("full"),),
                             overrides={"data": {"seq_len": 64}}))
    with pytest.raises(BenchError, match="task_overrides for listops, which it does not list"):
        register_suite(Suite(name="bad", description="", tasks=("mqar",), methods=(plain("full"),),
                             task_overrides={"listops": {"train": {"steps": 1}}}))
    with pytest.raises(BenchError, match="main_job_tasks names listops, which it does not list"):
        register_suite(Suite(name="bad", description="", tasks=("mqar",), methods=(plain("full"),),
                             main_job_tasks=("listops",)))


# --------------------------------------------------------------------------- killed runs


class KilledAfterTwoEvaluations:
    """Stands in for an executor whose wall-clock limit killed the run: the run trained and wrote
    its checkpoint at two evaluations, then the executor could only report a `timeout` row."""

    name = "killing"

    def map(self, run_fn, specs, on_record):
        from harness.config.layered import model_config, train_config
        from harness.sweep import runner
        from harness.sweep.records import failure_record
        from harness.training.loop import Splits, train
        from harness.training.model import EncoderClassifier

        for spec in specs:
            splits = runner.load_task(spec.task).prepare(None, spec.config["data"])
            # The run was to do 30 steps; it got through 20, evaluating at 10 and 20.
            config = dataclasses.replace(train_config(spec.config), steps=20)
            train(EncoderClassifier(model_config(spec.config)), Splits(splits["train"], splits["val"], splits["test"]),
                  config, head="sequence", seed=spec.seed, device=__import__("torch").device("cpu"),
                  checkpoint_path=runner.checkpoint_path(spec), checkpoint_key=spec.config_hash, progress=False)
            on_record(spec, failure_record(spec, "timeout", "run exceeded the executor's wall-clock limit"))


def test_a_killed_run_keeps_the_metrics_its_checkpoint_measured(tmp_path, tiny_suite):
    from harness.sweep.driver import SweepRequest, resolve_specs, run_sweep

    request = SweepRequest(suite="tiny", methods=["full"], out=tmp_path / "out", data_dir=tmp_path)
    record, = run_sweep(resolve_specs(request), request.out, KilledAfterTwoEvaluations())
    metrics = record["metrics"]
    assert record["status"] == "timeout" and "metrics up to step 20 read from its checkpoint" in record["reason"]
    assert [point["step"] for point in metrics["history"]] == [10, 20]
    assert metrics["steps"] == 20 and metrics["best_step"] in (10, 20) and metrics["test_accuracy"] is None
    assert metrics["val_accuracy"] == max(point["val_accuracy"] for point in metrics["history"])
    assert record["data"]["source"] == "generated" and record["data"]["sizes"] is None  # as planned; never read


def test_stale_temporaries_are_removed_at_the_next_sweep_start(tmp_path, tiny_suite):
    from harness.sweep.driver import run_sweep
    from harness.sweep.executors import LocalExecutor

    finished = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    dead_pid = int(finished.stdout)
    stale = [tmp_path / "records" / "t" / "m" / f".seed0.json.{dead_pid}.tmp",
             tmp_path / "checkpoints" / "t" / "m" / f".seed0.pt.{dead_pid}.tmp"]
    live = tmp_path / "checkpoints" / "t" / "m" / f".seed1.pt.{os.getpid()}.tmp"  # a writer still at work
    for path in [*stale, live]:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"half")
    run_sweep([], tmp_path, LocalExecutor())
    assert not any(path.exists() for path in stale) and live.exists()
