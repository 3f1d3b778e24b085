"""Layered configuration: order of layers, typed --set parsing, files, and refusals."""

import json

import pytest
import torch

from bench_common import BenchError
from harness.config import layered as cfg
from harness.training.model import EncoderClassifier, ModelConfig
from harness.sweep.driver import SweepRequest, resolve_specs


def resolve(tmp_path, sets=(), config_file=None, suite="tiny", **kwargs):
    request = SweepRequest(suite=suite, sets=list(sets), config_file=config_file, out=tmp_path / "out",
                           data_dir=tmp_path / "data", **kwargs)
    return resolve_specs(request)


def test_layers_apply_in_order_defaults_task_suite_file_set(tmp_path, tiny_suite):
    from harness.config.suites import SUITES, Suite, plain, register_suite

    SUITES.remove("tiny")
    register_suite(Suite(name="tiny", description="t", tasks=("tiny-majority",), methods=(plain("full"),),
                         overrides={"train": {"lr": 0.5, "steps": 11, "eval_every": 5}}))
    config_file = tmp_path / "c.json"
    config_file.write_text(json.dumps({"train": {"steps": 22}, "model": {"num_layers": 2}}))
    spec, = resolve(tmp_path, sets=["train.eval_every=7"], config_file=config_file)
    c = spec.config
    assert c["train"]["betas"] == [0.9, 0.98] and c["train"]["eps"] == 1e-9  # typed defaults
    assert c["train"]["batch_size"] == 16 and c["model"]["emb_dim"] == 16  # task defaults
    assert c["model"]["vocab_size"] == 4 and c["model"]["max_seq_len"] == 16  # what the task fixes
    assert c["train"]["lr"] == 0.5  # suite over task
    assert c["train"]["steps"] == 22 and c["model"]["num_layers"] == 2  # file over suite
    assert c["train"]["eval_every"] == 7  # --set over file
    assert c["data"] == {"num_examples": 256}
    assert (c["task"], c["method"], c["attention"], c["seed"], c["version"]) == ("tiny-majority", "full", "full", 0, cfg.CONFIG_VERSION)


def test_set_parses_by_field_type(tmp_path, tiny_suite):
    spec = resolve(tmp_path, sets=["train.grad_clip=1.5", "train.time_limit_s=null", "train.betas=0.8,0.9",
                                   "model.positions=learned", "data.num_examples=64", "train.early_stop_patience=3",
                                   "model.layer_attention={\"0\": {\"name\": \"sdpa\"}}"], methods=["full"])[0]
    c = spec.config
    assert c["train"]["grad_clip"] == 1.5 and c["train"]["time_limit_s"] is None
    assert c["train"]["betas"] == [0.8, 0.9] and c["model"]["positions"] == "learned"
    assert c["data"]["num_examples"] == 64 and c["train"]["early_stop_patience"] == 3
    assert c["model"]["layer_attention"] == {"0": {"name": "sdpa"}}


@pytest.mark.parametrize("assignment, message", [
    ("train.stepz=3", "unknown key 'stepz' (did you mean 'steps'?)"),
    ("trian.steps=3", "unknown key 'trian'"),
    ("train.steps=3.5", "train.steps: expected an integer"),
    ("train.steps=many", "expected an integer"),
    ("train.lr=fast", "expected a number"),
    ("train.schedule=linear", "expected one of 'rsqrt', 'cosine', 'onecycle', 'constant'"),
    ("train.betas=0.9", "expected 2 comma-separated values"),
    ("train.steps", "expected key=value"),
    ("model.dropout=yes", "expected a number"),
    ("model.attention_options=3", "expected a JSON object"),
    ("family=gpu", "expected one of 'lra', 'uniform'"),
    ("train.steps=-4", "train.steps must be > 0"),
    ("model.num_heads=3", "must divide model.qkv_dim"),
    ("data.num_rows=3", "unknown param 'num_rows'"),
    ("model.attention=nope", "unknown attention method 'nope'"),
    ("model.attention_options.window=4", "unknown option 'window'"),
])
def test_bad_set_values_are_refused_naming_the_key(tmp_path, tiny_suite, assignment, message):
    with pytest.raises(BenchError, match=message.replace("(", r"\(").replace(")", r"\)").replace("?", r"\?")):
        resolve(tmp_path, sets=[assignment])


def test_booleans_are_true_or_false_only():
    assert cfg.parse_text("x", "true", bool) is True and cfg.parse_text("x", "False", bool) is False
    with pytest.raises(BenchError, match="expected true or false"):
        cfg.parse_text("x", "1", bool)
    with pytest.raises(BenchError, match="expected true or false"):
        cfg.check_value("x", "yes", bool)


@pytest.mark.parametrize("name, text, message", [
    ("bad.json", '{"train": {\n "steps": }', r"bad.json:2:11: malformed JSON: Expecting value"),
    ("bad.yaml", "train:\n  steps: [1,\n", r"bad.yaml:\d+: malformed YAML"),
    ("bad.toml", "[train]\nsteps = = 3\n", r"bad.toml: malformed TOML.*line 2"),
    ("list.json", "[1, 2]", "expected a mapping of config sections"),
    ("typed.toml", "[train]\nsteps = \"ten\"\n", r"typed.toml: train.steps: expected an integer"),
    ("key.yaml", "model:\n  layers: 3\n", r"unknown key 'layers'"),
    ("conf.ini", "[train]", "unknown format '.ini'"),
])
def test_malformed_config_files_name_file_and_line(tmp_path, name, text, message):
    path = tmp_path / name
    path.write_text(text)
    with pytest.raises(BenchError, match=message):
        cfg.load_config_file(path)


def test_config_files_in_three_formats_agree(tmp_path):
    (tmp_path / "a.json").write_text('{"train": {"steps": 5, "grad_clip": null}, "family": "uniform"}')
    (tmp_path / "a.yaml").write_text("train:\n  steps: 5\n  grad_clip: null\nfamily: uniform\n")
    (tmp_path / "a.toml").write_text('family = "uniform"\n[train]\nsteps = 5\n')
    json_layer, yaml_layer, toml_layer = (cfg.load_config_file(tmp_path / f"a.{ext}") for ext in ("json", "yaml", "toml"))
    assert json_layer == yaml_layer
    assert toml_layer == {"family": "uniform", "train": {"steps": 5}}  # TOML has no null


def test_hash_keys_results_not_paths(tmp_path, tiny_suite):
    one, = resolve(tmp_path, methods=["full"])
    moved, = resolve(tmp_path / "elsewhere", methods=["full"])
    changed, = resolve(tmp_path, methods=["full"], sets=["train.steps=31"])
    assert one.config_hash == moved.config_hash  # data_dir/out live in the unhashed runtime section
    assert one.config_hash != changed.config_hash


def test_family_selects_task_defaults(tmp_path, tiny_suite, tiny_tasks):
    tiny_tasks["tiny-majority"].train_configs["uniform"] = {"steps": 77}
    try:
        spec, = resolve(tmp_path, methods=["full"], sets=["family=uniform"])
    finally:
        tiny_tasks["tiny-majority"].train_configs["uniform"] = dict(tiny_tasks["tiny-majority"].train_configs["lra"])
    assert spec.config["family"] == "uniform" and spec.config["train"]["steps"] == 77


def test_heads_not_dividing_the_model_dim_names_both_fields():
    with pytest.raises(BenchError, match=r"model\.num_heads=4 must divide model\.qkv_dim=10"):
        ModelConfig(qkv_dim=10, num_heads=4)


def test_model_rejects_inputs_longer_than_its_length():
    model = EncoderClassifier(ModelConfig(max_seq_len=32, attention="linformer", attention_options={"k": 8}))
    with pytest.raises(BenchError, match=r"input length 40 exceeds model\.max_seq_len=32"):
        model(torch.randint(1, 200, (1, 40)))
