"""train.compile: checked, hash-neutral while off."""

import json
from pathlib import Path

import pytest

from bench_common import BenchError
from harness.config import layered as cfg
from harness.training.train_config import TrainConfig

RESULTS = Path(__file__).resolve().parents[1] / "results"


def test_compile_is_off_by_default_and_checked():
    assert TrainConfig().compile == "off"
    with pytest.raises(BenchError, match=r"^train.compile must be one of off, on, got 'yes'$"):
        TrainConfig(compile="yes")


def test_set_train_compile_is_typed_by_its_field():
    assert cfg.parse_set("train.compile=on") == {"train": {"compile": "on"}}
    with pytest.raises(BenchError, match=r"--set train.compile: expected one of 'off', 'on', got 'fast'"):
        cfg.parse_set("train.compile=fast")


def test_off_leaves_the_config_hash_of_existing_records_unchanged():
    # a record committed before the option existed
    record = json.loads(next((RESULTS / "calibration" / "quick" / "x1" / "records").rglob("seed0.json")).read_text())
    config = dict(record["config"])
    assert "compile" not in config["train"] and cfg.config_hash(config) == record["config_hash"]
    config["train"] = {**config["train"], "compile": "off"}
    assert cfg.config_hash(config) == record["config_hash"]
    config["train"]["compile"] = "on"
    assert cfg.config_hash(config) != record["config_hash"]


def test_resolved_configs_name_the_option(tmp_path, tiny_suite):
    from harness.sweep.driver import SweepRequest, resolve_specs

    def resolve(sets=()):
        request = SweepRequest(suite="tiny", methods=["sdpa"], sets=list(sets), out=tmp_path / "out",
                               data_dir=tmp_path / "data", device="cpu")
        (spec,) = resolve_specs(request)
        return spec

    off, on = resolve(), resolve(["train.compile=on"])
    assert off.config["train"]["compile"] == "off" and on.config["train"]["compile"] == "on"
    assert off.config_hash != on.config_hash
