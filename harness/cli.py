"""`run_benchmark.py` subcommands. Thin: parses flags and calls the harness.

Exit status: 0 success, 1 some runs failed, 2 usage error (bad flag, config, data, plugin).
"""

from __future__ import annotations

import argparse
import sys
from typing import Optional, Sequence

from bench_common import BenchError


class _Parser(argparse.ArgumentParser):
    """argparse that raises our one-line error instead of printing usage and exiting."""

    def error(self, message: str) -> None:  # type: ignore[override]
        raise BenchError(f"{self.prog}: {message}")


def build_parser() -> argparse.ArgumentParser:
    common = _Parser(add_help=False)
    common.add_argument("--plugin", action="append", default=[], metavar="MODULE_OR_FILE",
                        help="import an attention plugin (module name or .py path); repeatable")
    common.add_argument("--debug", action="store_true", help="show tracebacks of errors")

    parser = _Parser(prog="run_benchmark.py", description="Treeformer Bench", parents=[common])
    commands = parser.add_subparsers(dest="command", parser_class=_Parser)
    commands.add_parser("list", parents=[common], help="list attention methods")
    return parser


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
    return 0


COMMANDS = {"list": cmd_list}


def main(argv: Optional[Sequence[str]] = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in argv
    try:
        args = build_parser().parse_args(argv)
        from methods import load_plugin

        for spec in args.plugin:
            load_plugin(spec)
        return COMMANDS[args.command or "list"](args)
    except BenchError as err:
        if debug:
            raise
        print(f"error: {err}", file=sys.stderr)
        return 2
