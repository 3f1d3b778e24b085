"""Treeformer speed against `sdpa`: whole training steps at n=128, one layer at 4096 and 8192.

Three parts, all timed as paired ratios in one process (methods interleaved in a rotating order,
every repetition divided by the `sdpa` time of the *same* repetition, so load from other processes
hits numerator and denominator alike), reported as the median ratio with a distribution-free 95%
interval (order statistics of the median) over at least 9 repetitions:

1. Training step of the whole model at the quick suite's shape (harness/config/suites.py: n=128,
   batch 32, 2 layers, 64 wide, 2 heads, token head, AdamW): forward, loss, backward, update.
2. One attention layer = the model's Q/K/V and output projections + the core
   (harness.training.model.AttentionLayer), B=1, 4 heads, head_dim 64, fp32, forward + backward,
   at n = 4096 and 8192, beside "projections only" (an identity core): the floor of any layer.
   Extra memory is the peak of bytes allocated by torch during one forward + backward beyond what
   existed before it (inputs, weights), replayed from the torch profiler's memory timeline.
3. With --profile, the torch profiler's table of one training step of sdpa, TF and TC at the
   quick shape (top operators by self time, operator calls per step, time outside operators).

    python scripts/bench_treeformer.py                   # everything, 2 threads: results/treeformer_speed/speed_threads2.*
    python scripts/bench_treeformer.py --profile --no-step --lengths   # the profile table alone
    python scripts/bench_treeformer.py --quick           # smoke check in about a minute; writes nothing

Timings are valid only on an otherwise idle machine: the script prints the load average at start
and end beside the tables.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import statistics
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402
import torch.utils.benchmark as benchmark  # noqa: E402
from torch import nn  # noqa: E402

from harness.config.suites import QUICK_OVERRIDES  # noqa: E402
from harness.measure.env import cpu_model, git_commit  # noqa: E402
from harness.report.speed_tables import speed_report  # noqa: E402
from harness.training.model import AttentionLayer, EncoderClassifier, ModelConfig  # noqa: E402
from methods import create_attention, list_attentions  # noqa: E402

HEADS, HEAD_DIM = 4, 64
WIDTH = HEADS * HEAD_DIM

TC, TF, TF_BUCKETED = "treeformer-tc h=5", "treeformer-tf h=5", "treeformer-tf h=5 bucketed"
# Targets: (label, length, bound on the paired time ratio to sdpa) of one layer, and of a whole
# training step at the quick shape. TF's long-length target holds for the exact or the bucketed form.
TIME_TARGETS = [(TC, 4096, 0.13), (TC, 8192, 0.07), (TF, 4096, 0.20), (TF_BUCKETED, 4096, 0.20)]
STEP_TARGETS = [("treeformer-tf", 1.6), ("treeformer-tc", 1.2)]
STEP_METHODS = ("sdpa", "treeformer-tf", "treeformer-tc", "full", "linformer", "performer")
PROFILED_METHODS = ("sdpa", "treeformer-tf", "treeformer-tc")
STEP_LENGTH, STEP_BATCH, STEP_VOCAB, STEP_CLASSES = 128, 32, 32, 8
MEMORY_LENGTH, MEMORY_BOUND = 8192, 2.0  # TC's extra memory at n=8192 <= 2x sdpa's, and linear in n
# Bucketed TF's capacity factor, as scripts/choose_bucket_capacity.py chose it from trained trees.
CAPACITY_CHOICE = Path(__file__).resolve().parents[1] / "results" / "treeformer_speed" / "bucket_capacity.json"
MIN_REPEATS = 9


@dataclass
class Case:
    """One benchmarked layer: a label and a builder for a sequence length."""

    label: str
    build: Callable[[int], nn.Module]
    note: str = ""


@dataclass
class Row:
    label: str
    seq_len: int
    times_ms: list[float] = field(default_factory=list)
    ratios: list[float] = field(default_factory=list)
    extra_memory_mb: Optional[float] = None
    status: str = "ok"
    reason: Optional[str] = None


class RegistryLayer(nn.Module):
    """The model's attention layer around a registry core; takes (B, n, width) inputs."""

    def __init__(self, name: str, seq_len: int, **options):
        super().__init__()
        config = ModelConfig(emb_dim=WIDTH, qkv_dim=WIDTH, num_heads=HEADS, max_seq_len=seq_len)
        core = create_attention(name, num_heads=HEADS, head_dim=HEAD_DIM, max_seq_len=seq_len, **options)
        self.layer = AttentionLayer(config, core)

    def forward(self, x):
        return self.layer(x, None)


class ProjectionsOnly(nn.Module):
    """The floor: projections with an identity core (returns v)."""

    def __init__(self, seq_len: int):
        super().__init__()
        self.qkv = nn.Linear(WIDTH, 3 * WIDTH, bias=False)
        self.out = nn.Linear(WIDTH, WIDTH)

    def forward(self, x):
        batch, n, _ = x.shape
        v = self.qkv(x).view(batch, n, 3, WIDTH)[:, :, 2]
        return self.out(v)


def chosen_capacity_factor() -> tuple[float, str]:
    """Bucketed TF's capacity factor and where it comes from: scripts/choose_bucket_capacity.py's
    choice, else 1 (n / 2^h, a balanced leaf) when that script has not run or chose none."""
    factor = json.loads(CAPACITY_CHOICE.read_text()).get("factor") if CAPACITY_CHOICE.exists() else None
    if factor is None:
        return 1.0, "a balanced leaf (scripts/choose_bucket_capacity.py has chosen none)"
    return float(factor), "chosen by scripts/choose_bucket_capacity.py from trained trees"


def cases(tf_capacity_factor: float, capacity_source: str, peers: bool) -> list[Case]:
    def tf_capacity(n: int) -> int:
        return max(1, int(tf_capacity_factor * n / 2**5))

    found = [
        Case("sdpa", lambda n: RegistryLayer("sdpa", n)),
        Case(TC, lambda n: RegistryLayer("treeformer-tc", n, height=5), "default options (mean aggregates, implementation auto)"),
        Case(TF, lambda n: RegistryLayer("treeformer-tf", n, height=5), "exact (uncapped), default options"),
        Case(
            TF_BUCKETED,
            lambda n: RegistryLayer("treeformer-tf", n, height=5, bucket_capacity=tf_capacity(n)),
            f"bucket_capacity = {tf_capacity_factor:g} x n/32: {capacity_source}",
        ),
        Case("projections only", ProjectionsOnly, "identity core: the floor"),
    ]
    registered = set(list_attentions())
    for name in ("linformer", "performer"):
        if name in registered:
            found.append(Case(name, lambda n, name=name: RegistryLayer(name, n), "registry, default options"))
    if peers:
        found.extend(peer_cases())
    return found


def peer_cases() -> list[Case]:
    """The peer packages' own layers (their projections included), when installed."""
    found = []
    try:
        from linformer import LinformerSelfAttention

        found.append(Case(
            "linformer-pytorch k=256",
            lambda n: LinformerSelfAttention(dim=WIDTH, seq_len=n, heads=HEADS, dim_head=HEAD_DIM, k=256),
            "package linformer",
        ))
    except ImportError:
        pass
    try:
        from performer_pytorch import SelfAttention

        found.append(Case(
            "performer-pytorch 256 features",
            lambda n: SelfAttention(dim=WIDTH, heads=HEADS, dim_head=HEAD_DIM, nb_features=256, causal=False),
            "package performer-pytorch",
        ))
    except ImportError:
        pass
    return found


def forward_backward(layer: nn.Module, x: torch.Tensor, grad: torch.Tensor) -> None:
    layer.zero_grad(set_to_none=True)
    x.grad = None
    layer(x).backward(grad)


def extra_memory_mb(layer: nn.Module, x: torch.Tensor, grad: torch.Tensor) -> Optional[float]:
    """Peak MiB torch allocates during one forward+backward beyond pre-existing tensors."""
    from torch.profiler import profile

    try:
        with profile(profile_memory=True, record_shapes=True, with_stack=True) as prof:
            forward_backward(layer, x, grad)
        timeline = prof._memory_profile().timeline  # (time, action, (key, version), bytes)
    except Exception as error:  # a private profiler API: report, don't guess
        print(f"warning: memory profile unavailable: {error}", file=sys.stderr)
        return None
    current = peak = 0
    for _, action, (key, _version), size in sorted((e for e in timeline if e[0] >= 0), key=lambda e: e[0]):
        if key.device.type != "cpu":
            continue
        if action.name == "CREATE":
            current += size
        elif action.name == "DESTROY":
            current -= size
        peak = max(peak, current)
    return peak / 2**20


def measure(length: int, all_cases: list[Case], repeats: int, memory: bool) -> list[Row]:
    torch.manual_seed(0)
    x = torch.randn(1, length, WIDTH, requires_grad=True)
    grad = torch.randn(1, length, WIDTH)
    layers, rows = {}, {}
    for case in all_cases:
        rows[case.label] = row = Row(case.label, length)
        try:
            torch.manual_seed(0)
            layers[case.label] = case.build(length)
            forward_backward(layers[case.label], x, grad)  # warm-up
        except Exception as error:  # becomes a row, never a dropped one
            row.status, row.reason = "error", f"{type(error).__name__}: {error}"
            layers.pop(case.label, None)
    labels = [label for label in rows if label in layers]
    for repetition in range(repeats):
        shift = repetition % len(labels)
        order = labels[shift:] + labels[:shift]
        times = {}
        for label in order:
            timer = benchmark.Timer(
                stmt="forward_backward(layer, x, grad)",
                globals={"forward_backward": forward_backward, "layer": layers[label], "x": x, "grad": grad},
                num_threads=torch.get_num_threads(),
            )
            times[label] = timer.timeit(1).median * 1e3
        for label in labels:
            rows[label].times_ms.append(times[label])
            if "sdpa" in times:
                rows[label].ratios.append(times[label] / times["sdpa"])
        print(f"n={length} repetition {repetition + 1}/{repeats}: " + ", ".join(f"{k} {v:.0f}ms" for k, v in times.items()), flush=True)
    if memory:
        for label in labels:
            rows[label].extra_memory_mb = extra_memory_mb(layers[label], x, grad)
    return list(rows.values())


# --------------------------------------------------------------------------- training steps at n=128


class TrainingStep:
    """The quick suite's model with one core everywhere, an AdamW and one fixed batch."""

    def __init__(self, attention: str, batch: int = STEP_BATCH):
        torch.manual_seed(0)
        config = ModelConfig(vocab_size=STEP_VOCAB, num_classes=STEP_CLASSES, max_seq_len=STEP_LENGTH,
                             head="token", pad_id=0, attention=attention, **QUICK_OVERRIDES["model"])
        self.model = EncoderClassifier(config).train()
        self.net: nn.Module = self.model  # what the step calls: the model, or a compiled form of it
        train = QUICK_OVERRIDES["train"]
        self.optimizer = torch.optim.AdamW(self.model.parameters(), lr=train["lr"], weight_decay=train["weight_decay"])
        generator = torch.Generator().manual_seed(0)
        # Ids from 1: no padding, as in the quick suite's recall tasks (filler tokens are real).
        self.inputs = torch.randint(1, STEP_VOCAB, (batch, STEP_LENGTH), generator=generator)
        self.targets = torch.randint(0, STEP_CLASSES, (batch, STEP_LENGTH), generator=generator)

    def __call__(self) -> None:
        """What one step of harness/training/loop.py does: forward, loss (read), backward, update."""
        logits = self.net(self.inputs)
        loss = nn.functional.cross_entropy(logits.flatten(0, 1), self.targets.flatten())
        loss.item()
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()


def measure_steps(methods: tuple[str, ...], repeats: int, steps_per_repeat: int = 3) -> list[Row]:
    """Paired step times: each repetition times `steps_per_repeat` steps of every method."""
    steps, rows = {}, {}
    for name in methods:
        rows[name] = row = Row(name, STEP_LENGTH)
        try:
            steps[name] = TrainingStep(name)
            for _ in range(2):  # warm-up
                steps[name]()
        except Exception as error:  # becomes a row, never a dropped one
            row.status, row.reason = "error", f"{type(error).__name__}: {error}"
            steps.pop(name, None)
    names = [name for name in methods if name in steps]
    for repetition in range(repeats):
        shift = repetition % len(names)
        times = {}
        for name in names[shift:] + names[:shift]:
            start = time.perf_counter()
            for _ in range(steps_per_repeat):
                steps[name]()
            times[name] = (time.perf_counter() - start) / steps_per_repeat * 1e3
        for name in names:
            rows[name].times_ms.append(times[name])
            if "sdpa" in times:
                rows[name].ratios.append(times[name] / times["sdpa"])
        print(f"step n={STEP_LENGTH} repetition {repetition + 1}/{repeats}: "
              + ", ".join(f"{k} {v:.0f}ms" for k, v in times.items()), flush=True)
    return list(rows.values())


def profile_steps(methods: tuple[str, ...], steps: int = 5, rows: int = 25) -> str:
    """The torch profiler's view of `steps` training steps per method, as markdown."""
    from torch.profiler import ProfilerActivity, profile

    parts = []
    for name in methods:
        step = TrainingStep(name)
        for _ in range(3):  # warm-up
            step()
        start = time.perf_counter()
        for _ in range(steps):
            step()
        wall_ms = (time.perf_counter() - start) / steps * 1e3
        with profile(activities=[ProfilerActivity.CPU]) as prof:
            for _ in range(steps):
                step()
        averages = prof.key_averages()
        # Self times of all operators and autograd nodes; what a step spends beyond them is Python,
        # the dispatcher and the profiler itself.
        op_ms = sum(event.self_cpu_time_total for event in averages) / 1e3 / steps
        calls = sum(event.count for event in averages if event.key.startswith("aten::")) / steps
        parts += [
            f"## {name}",
            "",
            f"Step {wall_ms:.1f} ms without the profiler; under it, operators' self time {op_ms:.1f} ms per step; "
            f"{calls:.0f} aten operator calls per step.",
            "",
            "```",
            averages.table(sort_by="self_cpu_time_total", row_limit=rows),
            "```",
            "",
        ]
    return "\n".join(parts)


def environment(command: str, threads: int) -> dict:
    cpu = cpu_model()
    return {
        "machine": f"{platform.node()} {platform.machine()} {cpu}, {os.cpu_count()} cores",
        "threads": threads,
        "load_average": list(os.getloadavg()),
        "versions": {"python": platform.python_version(), "torch": torch.__version__},
        "git_commit": git_commit() or "unknown",
        "command": command,
        "date_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }


def median_interval(values: list[float], confidence: float = 0.95) -> Optional[list[float]]:
    """Distribution-free interval for the median: order statistics k and n+1-k (1-based), k the
    largest with P(Binomial(n, 1/2) < k) <= (1 - confidence)/2; None when n is too small (n < 6)."""
    ordered, n = sorted(values), len(values)
    tail, k = 0.0, 0
    while k < n:
        mass = math.comb(n, k) / 2**n  # P(exactly k of n below the median)
        if tail + mass > (1 - confidence) / 2:
            break
        tail += mass
        k += 1
    return None if k == 0 else [ordered[k - 1], ordered[n - k]]


def summarise(rows: list[Row]) -> list[dict]:
    sdpa_memory = {r.seq_len: r.extra_memory_mb for r in rows if r.label == "sdpa"}
    table = []
    for r in rows:
        entry = {
            "method": r.label,
            "seq_len": r.seq_len,
            "status": r.status,
            "reason": r.reason,
            "time_ms": statistics.median(r.times_ms) if r.times_ms else None,
            "ratio_to_sdpa": statistics.median(r.ratios) if r.ratios else None,
            "ratio_ci95": median_interval(r.ratios) if r.ratios else None,
            "pairs": len(r.ratios),
            "extra_memory_mb": r.extra_memory_mb,
        }
        base = sdpa_memory.get(r.seq_len)
        entry["memory_ratio_to_sdpa"] = (
            r.extra_memory_mb / base if r.extra_memory_mb is not None and base else None
        )
        table.append(entry)
    return table


def targets(table: list[dict], steps: list[dict]) -> list[dict]:
    found = {(e["method"], e["seq_len"]): e for e in table}
    checks = []

    def check(what: str, entry: Optional[dict], bound: float) -> None:
        value = entry["ratio_to_sdpa"] if entry else None
        checks.append({"target": what, "measured": value, "ci95": entry["ratio_ci95"] if entry else None,
                       "met": None if value is None else value <= bound})

    step_rows = {e["method"]: e for e in steps}
    for name, bound in STEP_TARGETS:
        check(f"{name} training step at n={STEP_LENGTH} <= {bound}x sdpa's", step_rows.get(name), bound)
    for label, length, bound in TIME_TARGETS:
        check(f"{label} layer time at n={length} <= {bound}x sdpa", found.get((label, length)), bound)
    tc_big, tc_half = found.get((TC, MEMORY_LENGTH)), found.get((TC, MEMORY_LENGTH // 2))
    if tc_big and tc_big["memory_ratio_to_sdpa"] is not None:
        checks.append({"target": f"{TC} extra memory at n={MEMORY_LENGTH} <= {MEMORY_BOUND:g}x sdpa's",
                       "measured": tc_big["memory_ratio_to_sdpa"], "ci95": None,
                       "met": tc_big["memory_ratio_to_sdpa"] <= MEMORY_BOUND})
    if tc_big and tc_half and tc_big["extra_memory_mb"] and tc_half["extra_memory_mb"]:
        growth = tc_big["extra_memory_mb"] / tc_half["extra_memory_mb"]
        checks.append({"target": f"{TC} extra memory growth per doubling of n ({MEMORY_LENGTH // 2} -> {MEMORY_LENGTH}; linear: 2x)",
                       "measured": growth, "ci95": None, "met": growth <= 2.2})
    return checks


def main(argv: Optional[list[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lengths", type=int, nargs="*", default=[4096, 8192],
                        help="layer lengths; none to skip the layer part")
    parser.add_argument("--repeats", type=int, default=MIN_REPEATS,
                        help=f"interleaved repetitions (pairs with sdpa) per part, at least {MIN_REPEATS}")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--tf-capacity-factor", type=float, default=None,
                        help="bucketed TF: bucket_capacity = factor x n / 2^5 (default: the factor "
                             "scripts/choose_bucket_capacity.py chose, else 1)")
    parser.add_argument("--no-step", dest="step", action="store_false", help="skip the training steps at n=128")
    parser.add_argument("--profile", action="store_true",
                        help=f"also write the profiler table of one training step at n={STEP_LENGTH}")
    parser.add_argument("--no-peers", dest="peers", action="store_false", help="skip the peer packages")
    parser.add_argument("--no-memory", dest="memory", action="store_false", help="skip the memory profile")
    parser.add_argument("--quick", action="store_true",
                        help="smoke check: 3 repetitions, n=512 only, no peers or memory; writes only with --out")
    parser.add_argument("--out", type=Path, default=None, help="results folder (default results/treeformer_speed)")
    args = parser.parse_args(argv)
    if args.quick:
        args.repeats, args.peers, args.memory = 3, False, False
        args.lengths = [512] if args.lengths == [4096, 8192] else args.lengths
    elif args.repeats < MIN_REPEATS:
        parser.error(f"--repeats must be at least {MIN_REPEATS} (the median's 95% interval needs them), got {args.repeats}")
    out = args.out if args.out is not None or args.quick else Path("results/treeformer_speed")
    torch.set_num_threads(args.threads)
    command = "python " + " ".join([sys.argv[0]] + (argv if argv is not None else sys.argv[1:]))
    env = environment(command, args.threads)
    if args.profile:
        profile = profile_steps(PROFILED_METHODS)
        load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
        header = (f"# Profile of one training step at n={STEP_LENGTH} (quick suite's shape)\n\n"
                  f"Machine: {env['machine']}; threads {args.threads}; torch {env['versions']['torch']}; "
                  f"commit {env['git_commit']}; {env['date_utc']}; load average {load} (on 2 cores a load above 2 "
                  f"means other processes ran beside: times are then inflated, use the shares only).\n\n"
                  f"Command: `{command}`\n\n")
        print(header + profile)
        if out is not None:
            out.mkdir(parents=True, exist_ok=True)
            (out / f"profile_step_threads{args.threads}.md").write_text(header + profile)
    steps = summarise(measure_steps(STEP_METHODS, args.repeats)) if args.step else []
    factor, source = chosen_capacity_factor() if args.tf_capacity_factor is None else (args.tf_capacity_factor, "given")
    all_cases = cases(factor, source, args.peers)
    rows = []
    for length in args.lengths:
        rows.extend(measure(length, all_cases, args.repeats, args.memory))
    env["load_average_end"] = list(os.getloadavg())
    table = summarise(rows)
    checks = targets(table, steps)
    notes = {case.label: case.note for case in all_cases}
    payload = {"env": env, "steps": steps, "rows": table, "targets": checks, "notes": notes}
    report = "# Treeformer speed against sdpa (CPU)\n\n" + speed_report(payload)
    print(report)
    if out is not None and (steps or table):
        write_results(out, f"speed_threads{args.threads}", payload, report)
    return 0


def write_results(out: Path, stem: str, payload: dict, report: str) -> None:
    """`<stem>.json` (the payload) and `<stem>.md` (its report) in `out`."""
    out.mkdir(parents=True, exist_ok=True)
    (out / f"{stem}.json").write_text(json.dumps(payload, indent=2) + "\n")
    (out / f"{stem}.md").write_text(report)


if __name__ == "__main__":
    raise SystemExit(main())
