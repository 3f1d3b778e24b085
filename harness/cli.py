"""`run_benchmark.py` subcommands. Thin: parses flags and calls the harness.

    run_benchmark.py                      the quick suite, a short efficiency sweep, then one report
    run_benchmark.py list                 methods, tasks, suites
    run_benchmark.py run --suite S ...    train and evaluate; one record per run
    run_benchmark.py efficiency ...       time and memory vs sequence length
    run_benchmark.py report DIR           tables and plots from DIR's records
    run_benchmark.py generate ...         prepare (generate / tokenise) the data of a suite's tasks

Exit status: 0 success, 1 some runs failed, 2 usage error (bad flag, config, data, plugin).
"""

from __future__ import annotations

import argparse
import difflib
import json
import os
import sys
import tempfile
import traceback
from pathlib import Path
from typing import Any, Optional, Sequence

from bench_common import BenchError
from harness.measure.env import resolve_device

class _Parser(argparse.ArgumentParser):
    """argparse that raises our one-line error instead of printing usage and exiting."""

    def error(self, message: str) -> None:  # type: ignore[override]
        raise BenchError(f"{self.prog}: {message}")


def _names(text: str) -> list[str]:
    names = [part.strip() for part in text.split(",")]
    if not text.strip() or not all(names):
        raise argparse.ArgumentTypeError(f"expected a comma-separated list without empty items, got {text!r}")
    repeated = sorted({name for name in names if names.count(name) > 1})
    if repeated:
        raise argparse.ArgumentTypeError(f"{', '.join(repeated)} given twice in {text!r}")
    return names


def _ints(text: str) -> list[int]:
    try:
        return [int(part) for part in _names(text)]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}") from None


def _seeds(text: str) -> list[int]:
    seeds = _ints(text)
    bad = [seed for seed in seeds if not 0 <= seed < 2**32]
    if bad:
        raise argparse.ArgumentTypeError(f"seeds must be integers in [0, 2**32), got {bad[0]}")
    return seeds


def check_directory_flag(flag: str, path: Path, writable: bool = True) -> Path:
    """A directory flag's path must be, or be creatable as, a directory: not a file or under one;
    and, when `writable`, one this process can write in (probed: permissions alone miss read-only
    mounts and /proc). The probe leaves nothing behind."""
    for part in [Path(path), *Path(path).parents]:
        if part.exists():
            if not part.is_dir():
                where = "is a file" if part == Path(path) else f"is under {part}, a file"
                raise BenchError(f"{flag} {path}: {where}; expected a directory")
            if writable:
                try:
                    os.rmdir(tempfile.mkdtemp(prefix=".write-probe.", dir=part))
                except OSError as err:
                    where = "" if part == Path(path) else f" (its nearest existing folder {part} is not)"
                    raise BenchError(f"{flag} {path}: not writable{where}: {err.strerror}; "
                                     f"expected a directory this user can write in") from None
            break
    return Path(path)


def check_data_dir_flag(path: Path) -> Path:
    """--data-dir is written when data is generated or tokenised; a read-only one is fine only when
    it already holds data (a shared, prepared cache), else every run would fail the same way."""
    prepared = Path(path).is_dir() and any(Path(path).iterdir())
    return check_directory_flag("--data-dir", path, writable=not prepared)


# Defaults of the common flags, applied after parsing: the flags are accepted both before and
# after the subcommand, and argparse would otherwise let the subcommand's defaults overwrite
# values given before it.
COMMON_DEFAULTS: dict[str, Any] = {
    "plugin": [], "debug": False, "suite": "quick", "methods": None, "tasks": None, "seeds": None,
    "out": None, "data_dir": None, "device": "auto", "config": None, "set": [],
    "executor": "local", "ray_address": None, "run_timeout": None, "run_memory_gb": None, "workers": None,
    "force": False,
    "retry_failed": False,
    "match_macs": None, "option": [],
}


def _flag(*names: str, **options: Any) -> tuple[tuple[str, ...], dict[str, Any]]:
    return names, options


# The flags shared by the subcommands; each subcommand takes those of FLAGS_OF (and lists only
# those in its --help); any flag is accepted before the subcommand, then checked the same way.
COMMON_FLAGS = [
    _flag("--plugin", action="append", metavar="MODULE_OR_FILE",
          help="import an attention plugin (module name or .py path); repeatable. "
               "Plugin code runs only when named here or installed as an entry point"),
    _flag("--debug", action="store_true", help="show tracebacks of errors"),
    _flag("--suite", help="suite to run (see `list`); default quick"),
    _flag("--methods", type=_names, help="comma-separated method labels or registry names"),
    _flag("--tasks", type=_names, help="comma-separated task names"),
    _flag("--seeds", type=_seeds, help="comma-separated seeds, each in [0, 2**32)"),
    _flag("--out", type=Path, help="output directory (default runs/<suite>; results/ holds the committed runs)"),
    _flag("--data-dir", type=Path, help="where task data is cached (default $TREEFORMER_BENCH_DATA or the user cache dir)"),
    _flag("--device", help="cpu, cuda or auto (cuda when available; the default)"),
    _flag("--config", type=Path, help="config file (.json, .yaml, .toml) layered over the suite"),
    _flag("--set", action="append", metavar="KEY=VALUE",
          help="override one config key, e.g. train.steps=100; repeatable"),
    _flag("--option", action="append", metavar="METHOD.KEY=VALUE",
          help="set one attention option of one method (a label or method name of the sweep), e.g. "
               "treeformer-tf.height=3; repeatable. Unlike --set model.attention_options.KEY, it leaves "
               "the other methods as they are"),
    _flag("--executor", help="local (default, in this process), subprocess (one process per "
          "run, with limits) or ray (a Ray cluster)"),
    _flag("--ray-address", help="Ray cluster address for --executor ray (auto or HOST:PORT)"),
    _flag("--run-timeout", type=float, help="wall-clock seconds per run (--executor subprocess)"),
    _flag("--run-memory-gb", type=float, help="memory cap per run in GiB (--executor subprocess)"),
    _flag("--workers", type=int, help="runs side by side (--executor subprocess; default 1); give each run "
          "threads=1 (--set threads=1) and one worker per core"),
    _flag("--force", action="store_true",
          help="rerun every selected run, replacing its record even when another config made it "
               "(without it a finished record of another config is refused). A rerun without "
               "flags skips ok, diverged and unsupported runs and retries oom, timeout and error "
               "ones; a replaced record's status is kept in the new one's previous_attempts"),
    _flag("--retry-failed", action="store_true",
          help="also rerun runs whose record says diverged or unsupported (same config)"),
    _flag("--match-macs", metavar="METHOD",
          help="run METHOD first, then choose each other method's cost option (Linformer's k, "
               "Performer's features, ...) so its attention-core MACs match what METHOD's trained "
               "model executed on the same task and seed (e.g. treeformer-tf)"),
]
ALL_FLAGS = set(COMMON_DEFAULTS)
FLAGS_OF: dict[Optional[str], set[str]] = {
    None: ALL_FLAGS,  # the bare command runs run, efficiency and report
    "list": {"plugin", "debug"},
    "run": ALL_FLAGS,
    # it times methods and trains nothing: no training, data or executor flags
    "efficiency": ALL_FLAGS - {"option", "config", "tasks", "seeds", "data_dir", "executor", "ray_address",
                               "run_timeout", "run_memory_gb", "workers", "force", "retry_failed", "match_macs"},
    "report": {"debug", "suite", "out", "methods", "tasks", "seeds"},
    "generate": {"plugin", "debug", "suite", "methods", "tasks", "data_dir", "device", "config", "set", "match_macs"},
}


def _dest(names: tuple[str, ...]) -> str:
    return names[0].lstrip("-").replace("-", "_")


def _common(command: Optional[str]) -> _Parser:
    common = _Parser(add_help=False, argument_default=argparse.SUPPRESS)
    for names, options in COMMON_FLAGS:
        if _dest(names) in FLAGS_OF[command]:
            common.add_argument(*names, **options)
    return common


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="run_benchmark.py", description="Treeformer Bench", parents=[_common(None)])
    commands = parser.add_subparsers(dest="command", parser_class=_Parser)
    commands.add_parser("list", parents=[_common("list")], help="list methods, tasks and suites")
    run = commands.add_parser("run", parents=[_common("run")], help="train and evaluate a suite")
    run.add_argument("--dry-run", action="store_true",
                     help="print one JSON line per planned run (task, method, seed, resolved config, config_hash, "
                          "record_exists, action: run, rerun, skip, refuse with the conflict, or wait for a "
                          "matched run's reference) and train nothing; exit 2 where the run would be refused. "
                          "It reads no data")
    efficiency = commands.add_parser("efficiency", parents=[_common("efficiency")], help="time and memory vs length")
    efficiency.add_argument("--seq-lens", type=_ints, default=None,
                            help="comma-separated lengths (default 256,512,...,16384)")
    report = commands.add_parser("report", parents=[_common("report")], help="render tables and plots of a results dir")
    report.add_argument("run_dir", type=Path, nargs="?", default=None, help="results directory (default: --out)")
    commands.add_parser("generate", parents=[_common("generate")], help="prepare the data of a suite's tasks")
    return parser


def out_dir(args: argparse.Namespace) -> Path:
    return check_directory_flag("--out", args.out or Path("runs") / args.suite)


def sweep_request(args: argparse.Namespace, out: Optional[Path] = None):
    """The SweepRequest of the flags; `out` defaults to the checked --out (generate names its own)."""
    from harness.sweep.driver import SweepRequest
    from lra import default_data_dir

    return SweepRequest(suite=args.suite, methods=args.methods, tasks=args.tasks, seeds=args.seeds,
                        config_file=args.config, sets=args.set, device=resolve_device(args.device),
                        data_dir=check_data_dir_flag(args.data_dir or default_data_dir()),
                        out=out_dir(args) if out is None else out, plugins=args.plugin,
                        match_macs=args.match_macs, options=args.option)


def cmd_list(args: argparse.Namespace) -> int:
    from methods import attention_options, get_attention_class, list_attentions

    print("attention methods:")
    for name in list_attentions():
        cls = get_attention_class(name)
        caps = cls.capabilities
        flags = [f for f, on in (("fixed-length", caps.fixed_length), ("cuda-only", caps.cuda_only),
                                 ("no-padding-mask", not caps.key_padding_mask)) if on]
        summary = (cls.__doc__ or "").strip().splitlines()[0] if cls.__doc__ else ""
        options = ", ".join(f"{k}={v!r}" for k, v in attention_options(name).items())
        print(f"  {name:<18} {summary}")
        if options:
            print(f"  {'':<18} options: {options}")
        if flags:
            print(f"  {'':<18} needs: {', '.join(flags)}")
    print("tasks:")
    try:
        from lra import get_task, list_tasks
    except ImportError:
        print("  (the lra task package is not available)")
    else:
        for name in list_tasks():
            task = get_task(name)
            where = "offline" if task.offline else "needs data"
            print(f"  {name:<18} n={task.seq_len:<6} {where:<10} {task.description}")
    from harness.config.suites import SUITES

    print("suites:")
    for name, suite in SUITES.items():
        print(f"  {name:<20} {suite.description}")
        print(f"  {'':<20} tasks: {', '.join(suite.tasks)}; methods: {', '.join(m.label for m in suite.methods)}")
    return 0


def cmd_run(args: argparse.Namespace) -> int:
    from harness.training.distributed import init_from_env, shutdown
    from harness.sweep.executors import executor_from_flags
    from harness.sweep.driver import failed, matching_reference, resolve_specs, run_matched, run_sweep

    executor = executor_from_flags(args.executor, args.ray_address, args.run_timeout, args.run_memory_gb, args.workers)
    request = sweep_request(args)
    specs = resolve_specs(request)
    reference = matching_reference(request)
    if getattr(args, "dry_run", False):
        from harness.sweep.driver import plan, refusal

        lines = plan(specs, request.out, force=args.force, retry_failed=args.retry_failed, reference=reference)
        for line in lines:
            print(json.dumps(line, default=str))
        conflicts = [line["conflict"] for line in lines if line["action"] == "refuse"]
        if conflicts:  # as the real run: refused, with the same line
            raise refusal(conflicts)
        return 0
    dist = init_from_env(request.device)
    unmatched: list = []
    try:
        if reference:
            records, unmatched = run_matched(specs, reference, request.out, executor, force=args.force,
                                             retry_failed=args.retry_failed)
        else:
            records = run_sweep(specs, request.out, executor, force=args.force, retry_failed=args.retry_failed)
    finally:
        shutdown(dist)
    bad = failed(records)
    if dist.is_primary:
        print(f"{len(records)} runs in {request.out}: {len(records) - len(bad)} without failure, {len(bad)} failed"
              + (f"; {len(unmatched)} not run (their reference failed)" if unmatched else ""))
    return 1 if bad or unmatched else 0



def cmd_efficiency(args: argparse.Namespace) -> int:
    """Times the suite's method variants (their own options) with `--set` applied as `run` applies
    it; `--set efficiency.KEY=VALUE` sets the sweep itself (harness/measure/efficiency_options.py)."""
    from harness.measure.efficiency import failed_rows, run_efficiency
    from harness.measure.efficiency_options import DEFAULT_SEQ_LENS, EfficiencyOptions
    from harness.config import layered

    options: dict[str, Any] = {}
    attention_options: dict[str, Any] = {}
    for item in args.set:
        key, _, text = item.partition("=")
        if key.startswith("efficiency."):
            name, value = layered.parse_option_set(item.split(".", 1)[1], EfficiencyOptions, "efficiency")
            options[name] = value
            continue
        layer = layered.parse_set(item)
        if set(layer) != {"model"} or set(layer["model"]) != {"attention_options"}:
            raise BenchError(f"--set {key}: does not apply to efficiency, which takes model.attention_options.KEY "
                             f"(as run does) and efficiency.KEY (the sweep's settings)")
        attention_options = layered.merge(attention_options, layer["model"]["attention_options"])
    methods = timed_variants(args, attention_options)
    out = check_directory_flag("--out", args.out or Path("runs") / "efficiency")
    path = run_efficiency(methods, args.seq_lens or DEFAULT_SEQ_LENS, out, resolve_device(args.device), args.plugin,
                          options)
    errors = failed_rows(path)
    print(f"efficiency results: {path}" + (f" ({len(errors)} cells raised an error)" if errors else ""))
    return 1 if errors else 0


def timed_variants(args: argparse.Namespace, attention_options: dict[str, Any]) -> list:
    """The suite's method variants (or the named ones) as the efficiency sweep times them: each
    with its own options, plus `attention_options` from --set. Unless methods are named, the naive
    `full` is timed beside `sdpa`: accuracy suites train only `sdpa`, the same function, and the
    textbook form's cost is worth showing."""
    from harness.measure.efficiency_options import TimedMethod
    from harness.config.suites import get_suite, plain
    from harness.sweep.driver import select_methods

    variants = select_methods(get_suite(args.suite), args.methods)
    if args.methods is None and "full" not in {v.label for v in variants}:
        variants = [*variants, plain("full")]
    return [TimedMethod.of(v.label, v.attention, {**v.options, **attention_options}) for v in variants]


def cmd_report(args: argparse.Namespace) -> int:
    from harness.report.render import Selection, render_report

    given = getattr(args, "run_dir", None)
    flag, run_dir = ("report", Path(given)) if given else ("--out", args.out or Path("runs") / args.suite)
    check_directory_flag(flag, run_dir, writable=False)
    if not run_dir.is_dir():
        raise BenchError(f"report: {run_dir} is not a directory of results")
    check_directory_flag(flag, run_dir)  # the report is written into it
    # The bare command reports the whole folder; `report` shows the runs its flags select.
    selection = Selection(args.methods, args.tasks, args.seeds) if args.command == "report" else Selection()
    report = render_report(run_dir, selection)
    for problem in report.problems:  # left-out files and mixed budgets: shown, and the exit status says so
        print(f"report: {problem}", file=sys.stderr)
    print(f"report: {report.out}")
    return 1 if report.problems else 0


def cmd_generate(args: argparse.Namespace) -> int:
    from harness.sweep import runner
    from harness.sweep.driver import resolve_specs

    request = sweep_request(args, Path("runs") / args.suite)  # generate writes data only, never --out
    prepared = set()
    for spec in resolve_specs(request):
        key = (spec.task, json.dumps(spec.config["data"], sort_keys=True))
        if key in prepared:
            continue
        prepared.add(key)
        try:
            splits = runner.load_task(spec.task).prepare(request.data_dir, dict(spec.config["data"]))
        except MemoryError:  # past the size check's lower bound: the loader's arrays are wider
            raise BenchError(f"{spec.task}: not enough memory to generate its data ({spec.config['data']}); "
                             f"lower data.num_examples") from None
        sizes = ", ".join(f"{name} {len(split.targets)}" for name, split in splits.items())
        print(f"{spec.task}: {sizes} (in {request.data_dir})")
    return 0


def cmd_default(args: argparse.Namespace) -> int:
    """Bare `run_benchmark.py`: the suite's main-job tasks (quick: many-keys recall and ListOps), a
    short efficiency sweep of its methods into the same directory, then one report of both."""
    from harness.config.suites import get_suite
    from harness.measure import efficiency_options
    from harness.measure.efficiency import failed_rows, run_efficiency

    main_job_tasks = get_suite(args.suite).main_job_tasks
    if args.tasks is None and main_job_tasks:
        args.tasks = list(main_job_tasks)
        print(f"main job: suite {args.suite} on {', '.join(main_job_tasks)} "
              f"(`run --suite {args.suite}` trains all its tasks)", file=sys.stderr)
    status = cmd_run(args)
    path = run_efficiency(timed_variants(args, {}), efficiency_options.MAIN_JOB_SEQ_LENS, out_dir(args),
                          resolve_device(args.device), args.plugin, efficiency_options.MAIN_JOB_OPTIONS)
    print(f"efficiency results: {path}")
    return max(status, cmd_report(args), 1 if failed_rows(path) else 0)


COMMANDS = {"list": cmd_list, "run": cmd_run, "efficiency": cmd_efficiency, "report": cmd_report,
            "generate": cmd_generate, None: cmd_default}


def flags_of(command: Optional[str]) -> list[str]:
    return [names[0] for names, _ in COMMON_FLAGS if _dest(names) in FLAGS_OF[command]]


def unknown_argument(parser: argparse.ArgumentParser, command: Optional[str], extra: list[str]) -> str:
    """The one line for arguments no parser took: a flag of another subcommand, a misspelt flag
    (with the closest ones), or a stray value."""
    where = command or parser.prog
    given = extra[0].split("=", 1)[0]
    if not given.startswith("-"):
        return f"{where}: unexpected argument {given!r}"
    if given in flags_of(None):
        return f"{where}: {given} does not apply to {where} (its flags: {', '.join(flags_of(command))})"
    own = flags_of(command) + (["--dry-run"] if command == "run" else ["--seq-lens"] if command == "efficiency" else [])
    close = difflib.get_close_matches(given.lstrip("-"), [flag.lstrip("-") for flag in own], n=3, cutoff=0.6)
    hint = f"; did you mean {' or '.join('--' + name for name in close)}?" if close else f"; its flags: {', '.join(own)}"
    return f"{where}: unknown flag {given}{hint}"


def main(argv: Optional[Sequence[str]] = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in argv
    try:
        parser = build_parser()
        args, extra = parser.parse_known_args(argv)
        if extra:
            raise BenchError(unknown_argument(parser, args.command, extra))
        not_applying = [key for key in COMMON_DEFAULTS if hasattr(args, key) and key not in FLAGS_OF[args.command]]
        if not_applying:
            flag = "--" + not_applying[0].replace("_", "-")
            raise BenchError(f"{args.command}: {flag} does not apply to {args.command} "
                             f"(its flags: {', '.join(flags_of(args.command))})")
        for key, value in COMMON_DEFAULTS.items():
            if not hasattr(args, key):
                setattr(args, key, value)
        if args.plugin:  # `methods` imports torch: a report without plugins never needs it
            from methods import load_plugin

            for spec in args.plugin:
                load_plugin(spec)
        return COMMANDS[args.command](args)
    except BenchError as err:
        if debug:
            traceback.print_exc()
        print(f"error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted; rerun the same command to resume", file=sys.stderr)
        return 130
