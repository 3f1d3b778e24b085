"""Resume equivalence through the CLI: an interrupted run resumes from its checkpoint to the same metrics."""

import json

import pytest

from harness.training import loop as train_module
from harness.training.checkpoints import load_checkpoint
from harness.cli import main
from harness.sweep.records import iter_record_paths, read_record
from reliability_support import one_thread  # noqa: F401

MEASURED = {"train_seconds", "steps_per_second", "tokens_per_second", "peak_memory_mb"}


def cli(tmp_path, out, method, *extra):
    return main(["run", "--suite", "tiny", "--methods", method, "--seeds", "0,1", "--out", str(out),
                 "--data-dir", str(tmp_path / "data"), "--device", "cpu", "--set", "train.steps=40",
                 "--set", "train.eval_every=10", "--set", "model.dropout=0.1", "--set", "train.schedule=cosine",
                 *extra])


def results(out):
    """Each run's record without the fields that measure the machine (time, memory)."""
    found = {}
    for path in iter_record_paths(out):
        record = read_record(path)
        metrics = {k: v for k, v in record["metrics"].items() if k not in MEASURED}
        found[path.relative_to(out)] = (record["status"], metrics, record["flops"], record["config_hash"],
                                        record["bootstrap"], record["diagnostics"])
    return found


def interrupt_at(monkeypatch, seed, step):
    """Ctrl-C when run `seed` is about to take training step `step` (between two checkpoints)."""
    real = train_module.TrainBatches.batch

    def batch(self, at):
        if self.seed == seed and at == step:
            raise KeyboardInterrupt
        return real(self, at)

    monkeypatch.setattr(train_module.TrainBatches, "batch", batch)


# Level-1 and level-2 bootstrap: full until step 8, then TC trees, then TF trees from step 16; the
# interruption at step 25 falls after both switches, so resuming must rebuild the switched model.
BOOTSTRAP = json.dumps({"warmup_attention": "full", "stages": [
    {"at_step": 8, "attention": "treeformer-tc", "options": {"height": 2}},
    {"at_step": 16, "attention": "treeformer-tf", "options": {"height": 2}}]})


@pytest.mark.parametrize("method, extra", [
    ("full", []),
    ("treeformer-tf", ["--set", "model.attention_options={\"height\": 2}", "--set", f"bootstrap={BOOTSTRAP}"]),
], ids=["full", "treeformer-bootstrap"])
def test_interrupted_run_resumes_to_bit_identical_metrics(tmp_path, tiny_suite, monkeypatch, capsys, one_thread,
                                                          method, extra):
    assert cli(tmp_path, tmp_path / "whole", method, *extra) == 0
    whole = results(tmp_path / "whole")

    out = tmp_path / "out"
    with monkeypatch.context() as patch:
        interrupt_at(patch, seed=1, step=25)  # checkpoints exist at steps 10 and 20
        assert cli(tmp_path, out, method, *extra) == 130
    assert "rerun the same command to resume" in capsys.readouterr().err
    [checkpoint] = (out / "checkpoints").rglob("seed1.pt")
    assert load_checkpoint(checkpoint)["step"] == 20
    assert len(list(iter_record_paths(out))) == 1  # seed 0 finished, seed 1 has no record yet

    loaded = []
    real_load = train_module.load_checkpoint
    monkeypatch.setattr(train_module, "load_checkpoint", lambda path: loaded.append(path) or real_load(path))
    assert cli(tmp_path, out, method, *extra) == 0
    assert loaded == [checkpoint]  # only the interrupted run ran again, from its checkpoint
    assert not checkpoint.exists()
    assert results(out) == whole and len(whole) == 2

