"""Matched cost: each method's declared cost option (Linformer's k, Performer's features) solved against what
the trained reference executed."""

import pytest
import torch

from bench_common import BenchError
from harness.cli import COMMON_DEFAULTS, build_parser, sweep_request
from harness.config import layered as cfg
from harness.config.suites import SUITES, MethodVariant, Suite, plain, register_suite
from harness.measure.flops import count_macs
from harness.sweep.driver import SweepRequest, resolve_specs
from harness.sweep.matching import solve_option
from harness.training.model import EncoderClassifier
from methods import create_attention, get_attention_class, list_attentions


def config_for(attention: str, **options) -> dict:
    config = cfg.default_layer("cpu")
    config["task"] = "hand"
    config["model"].update(vocab_size=8, num_classes=2, max_seq_len=64, emb_dim=32, qkv_dim=32, num_heads=2,
                           num_layers=1, attention=attention, attention_options=options)
    return config


def test_solved_options_against_hand_counts():
    # Linformer per head: E k and F v (k n d each), scores and weighted sum (n k d each), softmax n k:
    # 2 heads x k x (4 x 64 x 16 + 64) = 8320 k. Target 10.4 k-units: k = 10 is closest.
    assert solve_option(config_for("linformer"), 8320 * 10.4) == (10, 8320 * 10)
    # Performer per head: projections 2 n m d, exps 2 n m, products 2 n m (d + 1): 2 x m x 4352 = 8704 m.
    assert solve_option(config_for("performer"), 8704 * 37.6) == (38, 8704 * 38)


def methods_with_a_cost_option() -> list[str]:
    return [name for name in list_attentions() if get_attention_class(name).cost_option is not None]


@pytest.mark.parametrize("name", methods_with_a_cost_option())
def test_every_declared_cost_option_grows_and_is_solved(name):
    """Bisection needs MACs that never fall as the option grows; a target hit exactly is found."""
    cost, n = get_attention_class(name).cost_option, 64
    top = cost.maximum(n)
    values = sorted({cost.minimum, top, *(cost.minimum + (top - cost.minimum) * i // 9 for i in range(10))})
    macs = [create_attention(name, num_heads=2, head_dim=16, max_seq_len=n, **{cost.name: v}).macs(n) for v in values]
    assert macs == sorted(macs), dict(zip(values, macs))
    target = macs[len(values) // 2]
    value, achieved = solve_option(config_for(name), target)
    assert achieved == target and isinstance(value, int)


def test_an_unreachable_target_is_refused():
    # Linformer's k stops at n = 64: 8320 x 64 MACs at most, far below the target.
    with pytest.raises(BenchError, match="cannot match .* within 15%"):
        solve_option(config_for("linformer"), 8320 * 1000)


@pytest.fixture
def matched_suite(tiny_tasks):
    suite = register_suite(Suite(
        name="tiny-matched", description="tests", tasks=("tiny-majority",), family="lra",
        methods=(MethodVariant("tf", "treeformer-tf", {"height": 2}), plain("linformer"), plain("performer"), plain("full")),
        match_macs="tf"))
    yield suite
    SUITES.remove("tiny-matched")


def test_matched_runs_are_solved_against_the_trained_reference_of_their_seed(tmp_path, matched_suite, tiny_tasks):
    from harness.sweep.driver import plan, run_matched
    from harness.sweep.executors import LocalExecutor
    from harness.sweep.records import read_record, record_path, write_record

    out = tmp_path / "out"
    request = SweepRequest(suite="tiny-matched", out=out, data_dir=tmp_path / "data", seeds=[0, 1],
                           methods=["linformer", "performer", "full"],  # the reference joins by itself
                           sets=["train.steps=4", "train.eval_every=2"])
    specs = resolve_specs(request)
    assert sorted({s.method for s in specs}) == ["full", "linformer", "performer", "tf"]
    before = {(line["method"], line["seed"]): line for line in plan(specs, out, reference="tf")}
    assert before[("linformer", 0)]["config_hash"] is None
    assert before[("linformer", 0)]["waits"] == "waits for the reference run tiny-majority/tf/seed0"
    assert before[("full", 0)]["config_hash"] and "waits" not in before[("full", 0)]

    records, unmatched = run_matched(specs, "tf", out, LocalExecutor())
    assert unmatched == [] and all(r["status"] == "ok" for r in records)
    for seed in (0, 1):
        trained = read_record(record_path(out, "tiny-majority", "tf", seed))["flops"]["attention_core_macs"]
        for method, option in (("linformer", "k"), ("performer", "num_features")):
            record = read_record(record_path(out, "tiny-majority", method, seed))
            match = record["config"]["runtime"]["match_macs"]
            assert match["reference"] == "tf" and match["target_macs"] == trained
            assert match["reference_record"].endswith(f"tiny-majority/tf/seed{seed}.json")
            # what the matched model executes, traced by fvcore (not the method's formula)
            model = EncoderClassifier(cfg.model_config(record["config"]))
            traced = count_macs(model, torch.randint(1, 3, (1, 16)))["attention_core_macs"]
            assert abs(traced - trained) <= 0.15 * trained, (method, record["config"]["model"]["attention_options"])
            assert isinstance(record["config"]["model"]["attention_options"][option], int)
    # a rerun resolves the same matched configs from the records: everything is done
    after = plan(resolve_specs(request), out, reference="tf")
    assert all(line["record_exists"] for line in after)

    # a failed reference leaves its matched runs unrun, named with the reason
    failed = read_record(record_path(out, "tiny-majority", "tf", 1))
    write_record(out, {**failed, "status": "error", "reason": "planted"})
    waiting = {(line["method"], line["seed"]): line.get("waits") for line in plan(resolve_specs(request), out, reference="tf")}
    assert waiting[("performer", 1)] == "reference run tiny-majority/tf/seed1 ended 'error': nothing to match"
    assert waiting[("performer", 0)] is None


def test_match_macs_flag_reaches_the_sweep_request(tmp_path):
    args = build_parser().parse_args(["run", "--match-macs", "treeformer-tf", "--device", "cpu"])
    for key, value in COMMON_DEFAULTS.items():  # as main() fills them
        if not hasattr(args, key):
            setattr(args, key, value)
    assert sweep_request(args).match_macs == "treeformer-tf"


def test_a_plugin_declares_its_cost_option_and_is_matched_without_a_harness_edit():
    from methods import ATTENTION, AttentionMethod, CostOption, register_attention

    @register_attention("test-window")
    class Window(AttentionMethod):
        cost_option = CostOption("window", minimum=2, maximum_per_token=0.5)

        def __init__(self, num_heads, head_dim, max_seq_len, window: int = 4):
            super().__init__(num_heads, head_dim, max_seq_len)
            self.window = window

        def forward(self, q, k, v, key_padding_mask=None):
            return v

        def macs(self, seq_len):
            return 100 * self.window * seq_len

    try:
        # one core call per example: 6400 MACs per unit of window; the cap is 0.5 x 64 = 32
        assert solve_option(config_for("test-window"), 6400 * 7.2) == (7, 6400 * 7)
        assert solve_option(config_for("test-window"), 6400 * 32) == (32, 6400 * 32)
        with pytest.raises(BenchError, match="window=32"):
            solve_option(config_for("test-window"), 6400 * 40)
    finally:
        ATTENTION.remove("test-window")
