"""ListOps (Nangia & Bowman 2018) as LRA generates and reads it.

Generation follows the official `lra_benchmarks/data/listops.py`: operators MIN, MAX, MED (median
truncated to int), SM (sum mod 10), digits 0-9, a leaf with probability 0.75 at each node above
the maximum depth (depth counted from 1), 2..max_args arguments, unique trees with
min_length < length < max_length where length counts operator, digit and `]` tokens; every
operator application is serialised with parentheses around each (prefix, argument) pair.
Two deliberate differences, neither changing the distribution of kept trees: the generator is
seeded (the official one uses an unseeded `random` and Python's unordered set), and a tree is
abandoned as soon as it reaches max_length (it would be rejected anyway), which keeps generation
fast.

Reading follows the official pipeline: `]` -> `X`, parentheses dropped, whitespace tokens,
truncated to the sequence length. The official vocabulary comes from a Python set (arbitrary ids);
ours is fixed: 0 = pad, digits 1-10, operators 11-14, `X` 15.
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

import numpy as np

from bench_common import BenchError
from lra.cache import Split, params_hash
from lra.fingerprint import Source
from lra.task import Built, Loader, Task
from lra.tsv import parse_label, read_rows, write_rows

OPERATORS = ("[MIN", "[MAX", "[MED", "[SM")
END = "]"
LEAF_PROBABILITY = 0.75
VOCAB = ("<pad>",) + tuple(str(d) for d in range(10)) + OPERATORS + ("X",)
TOKEN_IDS = {token: index for index, token in enumerate(VOCAB)}
HEADER = ("Source", "Target")
FILE_STEM = "basic"


class _TooLong(Exception):
    pass


def _apply(operator: str, values: list[int]) -> int:
    if operator == "[MIN":
        return min(values)
    if operator == "[MAX":
        return max(values)
    if operator == "[MED":
        return int(statistics.median(values))
    return sum(values) % 10


class _Sampler:
    """Draws trees as flat prefix codes: a digit d is d, an operator node is 100*(op+1) + argument count.

    Uniforms come from a seeded numpy stream in blocks; each decision uses one uniform, so the
    distributions are those of the official random.random / randint / choice calls.
    """

    def __init__(self, seed: int, max_depth: int, max_args: int):
        self.draw = self._stream(np.random.default_rng(seed)).__next__
        self.max_depth, self.max_args = max_depth, max_args

    @staticmethod
    def _stream(rng: np.random.Generator):
        while True:
            yield from rng.random(1 << 16).tolist()

    def tree(self, max_length: int) -> Optional[list[int]]:
        """Prefix codes of one tree, or None once it reaches max_length tokens."""
        draw, max_depth, spread = self.draw, self.max_depth, self.max_args - 1
        operator_probability = 1 - LEAF_PROBABILITY
        codes: list[int] = []
        append = codes.append
        budget = max_length

        def node(depth: int) -> None:
            # Called for operator nodes only; leaf children are drawn inline (most nodes are leaves).
            nonlocal budget
            budget -= 2  # the operator and its closing bracket
            if budget <= 0:
                raise _TooLong
            count = 2 + int(draw() * spread)
            append(100 * (1 + int(draw() * 4)) + count)
            child_can_branch = depth + 1 < max_depth
            for _ in range(count):
                if child_can_branch and draw() <= operator_probability:
                    node(depth + 1)
                else:
                    budget -= 1
                    if budget <= 0:
                        raise _TooLong
                    append(int(draw() * 10))

        try:
            if max_depth > 1 and draw() <= operator_probability:
                node(1)
            else:
                append(int(draw() * 10))
        except _TooLong:
            return None
        return codes


def _render(codes: list[int]) -> tuple[str, int]:
    """(serialised tree, value) of prefix codes, in one pass with a stack of open operators.

    Serialisation as the official to_string: a node with k arguments is
    "( " * (k+1) + op, then " <argument> )" per argument, then " ] )".
    """
    parts: list[str] = []
    stack: list[tuple[str, list[int], int]] = []  # (operator, argument values so far, argument count)
    for code in codes:
        if stack:
            parts.append(" ")
        if code >= 100:
            count = code % 100
            operator = OPERATORS[code // 100 - 1]
            parts.append("( " * (count + 1) + operator)
            stack.append((operator, [], count))
            continue
        parts.append(str(code))
        value = code
        while stack:  # close every operator this leaf completes
            parts.append(" )")
            operator, values, count = stack[-1]
            values.append(value)
            if len(values) < count:
                break
            parts.append(f" {END} )")
            stack.pop()
            value = _apply(operator, values)
    return "".join(parts), value


def _length(codes: list[int]) -> int:
    """Official length: one per digit, two per operator (itself and its `]`)."""
    return len(codes) + sum(1 for code in codes if code >= 100)


def generate_examples(
    count: int, seed: int, min_length: int = 500, max_length: int = 2000, max_depth: int = 10, max_args: int = 10
) -> list[tuple[str, int]]:
    """`count` unique (expression, value) pairs with min_length < length < max_length, in generation order."""
    sampler = _Sampler(seed, max_depth, max_args)
    kept: dict[str, int] = {}  # insertion-ordered set, so the output is deterministic
    while len(kept) < count:
        codes = sampler.tree(max_length)
        if codes is None or _length(codes) <= min_length:
            continue
        text, value = _render(codes)
        kept.setdefault(text, value)
    return list(kept.items())


def write_split_files(directory: Path, splits: dict[str, list[tuple[str, int]]]) -> None:
    """Writes `basic_{train,val,test}.tsv` with the official `Source<TAB>Target` header."""
    for name, rows in splits.items():
        write_rows(directory / f"{FILE_STEM}_{name}.tsv", [[text, value] for text, value in rows], HEADER)


def tokenize(path: Path, line: int, source: str) -> list[int]:
    """Official tokenisation: `]` -> X, parentheses dropped, split on whitespace."""
    tokens = source.replace("]", "X").replace("(", "").replace(")", "").split()
    try:
        return [TOKEN_IDS[token] for token in tokens]
    except KeyError as err:
        raise BenchError(f"{path}:{line}: unknown ListOps token {err.args[0]!r}; expected digits, {', '.join(OPERATORS)}, ], ( )") from None


def read_split_file(path: Path, seq_len: int) -> Split:
    """Reads one official ListOps TSV into padded token ids (truncated to seq_len) and labels."""
    if not path.is_file():
        raise BenchError(f"missing ListOps file {path}")
    rows, targets = [], []
    for line, (source, target) in read_rows(path, columns=2, header=HEADER):
        rows.append(np.asarray(tokenize(path, line, source)[:seq_len], dtype=np.uint8))
        targets.append(parse_label(path, line, target, 10))
    inputs = np.zeros((len(rows), seq_len), dtype=np.uint8)  # 16 ids: a byte each keeps 96k x 2000 small
    for index, ids in enumerate(rows):
        inputs[index, :ids.size] = ids
    return Split(inputs, np.asarray(targets, dtype=np.int64))


@dataclass(frozen=True)
class ListOpsLoader(Loader):
    """Official release files when present (official task only), else generated with the task params."""

    official_dir: Optional[str] = None  # relative to data_dir, e.g. "lra_release/listops-1000"
    offline: bool = True

    def validate(self, task: Task, params: dict[str, Any]) -> None:
        if not 0 <= params["min_length"] < params["max_length"] - 1:
            raise BenchError(f"task '{task.name}': need 0 <= min_length < max_length - 1")
        if params["max_args"] < 2 or params["max_depth"] < 1:
            raise BenchError(f"task '{task.name}': need max_args >= 2 and max_depth >= 1")
        if params["num_examples"] < 3:
            raise BenchError(f"task '{task.name}': num_examples must be at least 3")

    def shape(self, task: Task, params: dict[str, Any]) -> dict[str, int]:
        return {"max_seq_len": params["max_length"]}

    def _official(self, data_dir: Path) -> Optional[Path]:
        if self.official_dir is None:
            return None
        directory = data_dir / self.official_dir
        return directory if (directory / f"{FILE_STEM}_train.tsv").is_file() else None

    def source(self, task: Task, data_dir: Path, params: dict[str, Any]) -> Source:
        official = self._official(data_dir)
        if official is not None:
            return Source("official", official, tuple(official / f"{FILE_STEM}_{s}.tsv" for s in ("train", "val", "test")))
        return Source("generated", self.generated_dir(task, data_dir, params))

    def generated_dir(self, task: Task, data_dir: Path, params: dict[str, Any]) -> Path:
        return data_dir / "generated" / task.name / f"v{task.version}-{params_hash(params)}"

    def generate(self, task: Task, data_dir: Path, params: dict[str, Any]) -> Path:
        """Writes the official TSV layout for `params` (once) and returns its directory."""
        directory = self.generated_dir(task, data_dir, params)
        if all((directory / f"{FILE_STEM}_{s}.tsv").is_file() for s in ("train", "val", "test")):
            return directory
        total = params["num_examples"]
        examples = generate_examples(
            total, params["seed"], params["min_length"], params["max_length"], params["max_depth"], params["max_args"]
        )
        val = max(1, round(total * params["val_fraction"]))
        test = max(1, round(total * params["test_fraction"]))
        train = total - val - test
        write_split_files(
            directory,
            {"train": examples[:train], "val": examples[train:train + val], "test": examples[train + val:]},
        )
        return directory

    def build(self, task: Task, data_dir: Path, params: dict[str, Any]) -> Built:
        directory = self._official(data_dir) or self.generate(task, data_dir, params)
        seq_len = params["max_length"]
        return Built({s: read_split_file(directory / f"{FILE_STEM}_{s}.tsv", seq_len) for s in ("train", "val", "test")})
