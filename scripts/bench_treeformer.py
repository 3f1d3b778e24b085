"""Speed and memory of one Treeformer attention layer against `sdpa` and its peers.

One attention layer = the model's Q/K/V and output projections + the core (harness.training.model
.AttentionLayer), B=1, 4 heads, head_dim 64, fp32, forward + backward, on the CPU. Methods are
interleaved: every repetition times each method once (in a rotating order) and divides by the
`sdpa` time of the *same* repetition, so load from other processes hits numerator and denominator
alike; the table reports the median of the paired ratios with a distribution-free 95% interval
(order statistics of the median), over at least 9 repetitions. Extra memory is the peak of bytes allocated
by torch during one forward + backward beyond what existed before it (inputs, weights), replayed
from the torch profiler's memory timeline; it does not depend on timing noise.

    python scripts/bench_treeformer.py          # n = 4096 and 8192, 9 pairs, 2 threads: results/treeformer_speed/speed_threads2.*
    python scripts/bench_treeformer.py --lengths 4096 --repeats 15

Timings are valid only on an otherwise idle machine: the script prints the load average at start
and end beside the table.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402
import torch.utils.benchmark as benchmark  # noqa: E402
from torch import nn  # noqa: E402

from harness.measure.env import cpu_model  # noqa: E402
from harness.training.model import AttentionLayer, ModelConfig  # noqa: E402
from methods import create_attention, list_attentions  # noqa: E402

HEADS, HEAD_DIM = 4, 64
WIDTH = HEADS * HEAD_DIM

TC, TF, TF_BUCKETED = "treeformer-tc h=5", "treeformer-tf h=5", "treeformer-tf h=5 bucketed"
# The speed the Treeformer cores are held to: (label, length, bound on the paired time ratio to sdpa).
TIME_TARGETS = [(TC, 4096, 0.15), (TC, 8192, 0.08), (TF, 4096, 0.25), (TF_BUCKETED, 4096, 0.20)]
MEMORY_LENGTH, MEMORY_BOUND = 8192, 2.0  # TC's extra memory at n=8192 <= 2x sdpa's, and linear in n
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


def cases(tf_capacity_factor: float, peers: bool) -> list[Case]:
    def tf_capacity(n: int) -> int:
        return max(1, int(tf_capacity_factor * n / 2**5))

    found = [
        Case("sdpa", lambda n: RegistryLayer("sdpa", n)),
        Case(TC, lambda n: RegistryLayer("treeformer-tc", n, height=5), "default options (mean aggregates, implementation auto)"),
        Case(TF, lambda n: RegistryLayer("treeformer-tf", n, height=5), "exact (uncapped), default options"),
        Case(
            TF_BUCKETED,
            lambda n: RegistryLayer("treeformer-tf", n, height=5, bucket_capacity=tf_capacity(n)),
            f"bucket_capacity = {tf_capacity_factor:g} x n/32",
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


def environment(command: str, threads: int) -> dict:
    def git(*args: str) -> str:
        try:
            return subprocess.run(["git", *args], capture_output=True, text=True, check=True).stdout.strip()
        except (OSError, subprocess.CalledProcessError):
            return "unknown"

    cpu = cpu_model()
    return {
        "machine": f"{platform.node()} {platform.machine()} {cpu}, {os.cpu_count()} cores",
        "threads": threads,
        "load_average": list(os.getloadavg()),
        "versions": {"python": platform.python_version(), "torch": torch.__version__},
        "git_commit": git("rev-parse", "HEAD") + (" (dirty)" if git("status", "--porcelain", "--", ".", ":!results") else ""),
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


def targets(table: list[dict]) -> list[dict]:
    found = {(e["method"], e["seq_len"]): e for e in table}
    checks = []
    for label, length, bound in TIME_TARGETS:
        entry = found.get((label, length))
        value = entry and entry["ratio_to_sdpa"]
        interval = entry["ratio_ci95"] if entry else None
        checks.append({"target": f"{label} time at n={length} <= {bound}x sdpa", "measured": value,
                       "ci95": interval, "met": None if value is None else value <= bound})
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


def markdown(env: dict, table: list[dict], checks: list[dict], notes: dict) -> str:
    def fmt(value, spec):
        return "-" if value is None else format(value, spec)

    lines = [
        "# Treeformer speed and memory (one attention layer, fwd+bwd, CPU)",
        "",
        f"Machine: {env['machine']}; threads {env['threads']}; torch {env['versions']['torch']}; "
        f"python {env['versions']['python']}; commit {env['git_commit']}; {env['date_utc']}; "
        f"load average at start {', '.join(f'{x:.1f}' for x in env['load_average'])}.",
        "",
        f"Command: `{env['command']}`",
        "",
        "B=1, 4 heads, head_dim 64, fp32, projections included. Time: median over interleaved "
        "repetitions; ratio: median of the per-repetition (paired) ratios to sdpa, 95% interval of "
        "that median in brackets (order statistics). Extra "
        "memory: peak bytes torch allocates during one forward+backward, from the profiler's memory timeline.",
        "",
        "| method | n | time ms | ratio to sdpa [95%] | pairs | extra MiB | memory / sdpa | status |",
        "|---|--:|--:|--:|--:|--:|--:|---|",
    ]
    for e in table:
        spread = e["ratio_ci95"]
        interval = f" [{spread[0]:.3f}-{spread[1]:.3f}]" if spread else " [too few pairs]"
        ratio = "-" if e["ratio_to_sdpa"] is None else f"{e['ratio_to_sdpa']:.3f}x{interval}"
        lines.append(
            f"| {e['method']} | {e['seq_len']} | {fmt(e['time_ms'], '.1f')} | {ratio} | {e['pairs']} | "
            f"{fmt(e['extra_memory_mb'], '.1f')} | {fmt(e['memory_ratio_to_sdpa'], '.2f')} | "
            f"{e['status']}{': ' + e['reason'] if e['reason'] else ''} |"
        )
    lines += ["", "## Targets", "", "| target | measured | 95% interval | met |", "|---|--:|--:|---|"]
    for c in checks:
        interval = f"{c['ci95'][0]:.3f}-{c['ci95'][1]:.3f}" if c["ci95"] else "-"
        lines.append(f"| {c['target']} | {fmt(c['measured'], '.3f')} | {interval} | {'not measured' if c['met'] is None else 'yes' if c['met'] else 'no'} |")
    lines += ["", "## Method notes", ""] + [f"- {k}: {v}" for k, v in notes.items() if v]
    return "\n".join(lines) + "\n"


def main(argv: Optional[list[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lengths", type=int, nargs="+", default=[4096, 8192])
    parser.add_argument("--repeats", type=int, default=MIN_REPEATS,
                        help=f"interleaved repetitions (pairs with sdpa) per length, at least {MIN_REPEATS}")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--tf-capacity-factor", type=float, default=1.0,
                        help="bucketed TF: bucket_capacity = factor x n / 2^5")
    parser.add_argument("--no-peers", dest="peers", action="store_false", help="skip the peer packages")
    parser.add_argument("--no-memory", dest="memory", action="store_false", help="skip the memory profile")
    parser.add_argument("--out", type=Path, default=Path("results/treeformer_speed"))
    args = parser.parse_args(argv)
    if args.repeats < MIN_REPEATS:
        parser.error(f"--repeats must be at least {MIN_REPEATS} (the median's 95% interval needs them), got {args.repeats}")
    torch.set_num_threads(args.threads)
    command = "python " + " ".join([sys.argv[0]] + (argv if argv is not None else sys.argv[1:]))
    env = environment(command, args.threads)
    all_cases = cases(args.tf_capacity_factor, args.peers)
    rows = []
    for length in args.lengths:
        rows.extend(measure(length, all_cases, args.repeats, args.memory))
    env["load_average_end"] = list(os.getloadavg())
    table = summarise(rows)
    checks = targets(table)
    notes = {case.label: case.note for case in all_cases}
    args.out.mkdir(parents=True, exist_ok=True)
    stem = f"speed_threads{args.threads}"
    (args.out / f"{stem}.json").write_text(json.dumps({"env": env, "rows": table, "targets": checks}, indent=2) + "\n")
    report = markdown(env, table, checks, notes)
    (args.out / f"{stem}.md").write_text(report)
    print(report)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
