"""Every registered suite resolves to valid runs; the smoke suite runs end to end; bootstrap events
reach the record."""

import pytest

from bench_common import BenchError
from harness.config.suites import SUITES, MethodVariant, Suite, register_suite
from harness.sweep.driver import SweepRequest, resolve_specs


# A suite that matches MACs measures its reference on generated task data while resolving (a minute
# on 2 cores): heavy; tests/test_matching.py covers the matching on a tiny task.
@pytest.mark.parametrize("name", [pytest.param(name, marks=pytest.mark.heavy) if SUITES.get(name).match_macs else name
                                  for name in SUITES.names()])
def test_every_suite_resolves(tmp_path, name):
    specs = resolve_specs(SweepRequest(suite=name, out=tmp_path, data_dir=tmp_path))
    suite = SUITES.get(name)
    assert len(specs) == len(suite.tasks) * len(suite.methods) * len(suite.seeds)
    assert len({s.key for s in specs}) == len(specs)
    assert all(s.config["runtime"]["suite"] == name for s in specs)


def test_quick_and_smoke_are_offline_with_every_core_method():
    from lra import get_task

    for name in ("quick", "smoke"):
        suite = SUITES.get(name)
        assert all(get_task(task).offline for task in suite.tasks)
        assert {"sdpa", "linformer", "performer", "treeformer-tf", "treeformer-tc"} <= {
            m.attention for m in suite.methods}


def test_duplicate_labels_are_refused():
    with pytest.raises(BenchError, match="labels must be unique"):
        register_suite(Suite(name="dup", description="", tasks=("mqar",),
                             methods=(MethodVariant("a", "full"), MethodVariant("a", "sdpa"))))
    assert "dup" not in SUITES


def test_bootstrap_events_are_recorded(tmp_path, tiny_suite):
    from harness.sweep.executors import LocalExecutor
    from harness.sweep.driver import run_sweep

    SUITES.remove("tiny")
    plan = {"warmup_attention": "full", "stages": [{"at_step": 4, "attention": "treeformer-tc", "options": {"height": 2}},
                                                   {"at_step": 8, "attention": "treeformer-tf", "options": {"height": 2}}]}
    register_suite(Suite(name="tiny", description="", tasks=("tiny-majority",),
                         methods=(MethodVariant("tf-boot", "treeformer-tf", {"height": 2}, bootstrap=plan),)))
    request = SweepRequest(suite="tiny", sets=["train.steps=12", "train.eval_every=6"], out=tmp_path / "out",
                           data_dir=tmp_path)
    record, = run_sweep(resolve_specs(request), request.out, LocalExecutor())
    assert record["status"] == "ok", record["reason"]
    assert [(e["step"], e["to"]) for e in record["bootstrap"]] == [
        (0, "full"), (4, "treeformer-tc"), (8, "treeformer-tf")]
    assert record["metrics"]["best_step"] == 12  # chosen after the last switch only
    assert record["diagnostics"]  # tree cores report their diagnostics


@pytest.mark.slow
def test_smoke_suite_runs_end_to_end(tmp_path):
    from harness.cli import main

    assert main(["run", "--suite", "smoke", "--device", "cpu", "--out", str(tmp_path / "out"),
                 "--data-dir", str(tmp_path / "data")]) == 0


def test_quick_reports_few_and_many_key_recall_beside_listops():
    tasks = SUITES.get("quick").tasks
    assert {"mqar-few-keys", "mqar-many-keys"} <= set(tasks) and any(t.startswith("listops") for t in tasks)


def test_long_suite_is_long_and_uses_sdpa_as_its_exact_reference(tmp_path):
    from lra import get_task

    suite = SUITES.get("long")
    lengths = {name: get_task(name).seq_len for name in suite.tasks}
    assert any(name.startswith("mqar") and n >= 4096 for name, n in lengths.items())
    assert any(name.startswith("listops") and n >= 1024 for name, n in lengths.items())
    attentions = {m.attention for m in suite.methods}
    # `full` computes what `sdpa` computes at ~2.7x its time at n=4096: one exact reference only.
    assert "sdpa" in attentions and "full" not in attentions
    assert {"linformer", "performer", "treeformer-tf", "treeformer-tc"} <= attentions
    for spec in resolve_specs(SweepRequest(suite="long", out=tmp_path, data_dir=tmp_path)):
        assert spec.config["model"]["max_seq_len"] == lengths[spec.task]


def test_ablation_shares_quick_tasks_and_budget_and_switches_within_it(tmp_path):
    quick, ablation = SUITES.get("quick"), SUITES.get("treeformer-ablation")
    assert ablation.tasks == quick.tasks
    assert ablation.overrides == quick.overrides and ablation.task_overrides == quick.task_overrides
    steps = quick.overrides["train"]["steps"]
    for variant in ablation.methods:
        if variant.bootstrap:
            switches = [stage["at_step"] for stage in variant.bootstrap["stages"]]
            assert switches == sorted(switches) and 0 < switches[0] and switches[-1] < steps


def test_peers_runs_every_built_in_method_on_quick_tasks_and_budget():
    from methods import get_attention_class, list_attentions

    quick, peers = SUITES.get("quick"), SUITES.get("peers")
    assert peers.tasks == quick.tasks and peers.family == quick.family
    assert peers.overrides == quick.overrides and peers.task_overrides == quick.task_overrides
    assert len(peers.seeds) == 3
    built_in = {name for name in list_attentions() if get_attention_class(name).__module__.startswith("methods.")
                and not get_attention_class(name).capabilities.cuda_only and name != "full"}
    # A method registered in methods/ but missing from the suite fails here: add it to PEERS.
    assert {m.attention for m in peers.methods} == built_in
    assert {m.attention for m in quick.methods} < built_in
