"""ListOps: the generator against an independent evaluator, and the official TSV reader."""

from collections import Counter
from pathlib import Path

import pytest

from bench_common import BenchError
from lra.listops import TOKEN_IDS, generate_examples, read_split_file, write_split_files

MIN_LEN, MAX_LEN = 100, 256


def evaluate(expression: str) -> int:
    """Independent evaluator: a token stack over the serialised form (parentheses ignored)."""
    stack: list = []
    for token in expression.split():
        if token in "()":
            continue
        if token == "]":
            args = []
            while not isinstance(stack[-1], str):
                args.append(stack.pop())
            operator = stack.pop()
            args.reverse()
            if operator == "[MIN":
                stack.append(min(args))
            elif operator == "[MAX":
                stack.append(max(args))
            elif operator == "[MED":
                ordered = sorted(args)
                middle = len(ordered) // 2
                median = ordered[middle] if len(ordered) % 2 else (ordered[middle - 1] + ordered[middle]) / 2
                stack.append(int(median))
            else:
                assert operator == "[SM", operator
                stack.append(sum(args) % 10)
        elif token.startswith("["):
            stack.append(token)
        else:
            stack.append(int(token))
    assert len(stack) == 1
    return stack[0]


def official_length(expression: str) -> int:
    return sum(1 for token in expression.split() if token not in "()")


@pytest.fixture(scope="module")
def examples():
    return generate_examples(400, seed=7, min_length=MIN_LEN, max_length=MAX_LEN)


def test_labels_match_an_independent_evaluation(examples):
    assert all(evaluate(text) == value for text, value in examples)


def test_lengths_within_bounds_and_no_duplicates(examples):
    lengths = [official_length(text) for text, _ in examples]
    assert min(lengths) > MIN_LEN and max(lengths) < MAX_LEN
    assert len({text for text, _ in examples}) == len(examples)


def test_serialisation_is_the_official_bracketing(examples):
    text, _ = examples[0]
    # Every operator application is "( ( ... ( OP a ) b ) ... ] )": parentheses balance and the
    # number of "(" equals the number of (prefix, argument) pairs plus the closing pairs.
    assert text.count("(") == text.count(")")
    operators = sum(text.count(op) for op in ("[MIN", "[MAX", "[MED", "[SM"))
    assert text.count("]") == operators


def test_label_distribution_covers_all_classes(examples):
    counts = Counter(value for _, value in examples)
    print("ListOps label distribution:", dict(sorted(counts.items())))
    assert set(counts) == set(range(10))
    assert max(counts.values()) / len(examples) < 0.4  # MIN/MAX skew towards 0 and 9, not degenerate


def test_generation_is_seeded(examples):
    assert generate_examples(50, seed=7, min_length=MIN_LEN, max_length=MAX_LEN) == examples[:50]
    assert generate_examples(50, seed=8, min_length=MIN_LEN, max_length=MAX_LEN) != examples[:50]


def test_tsv_round_trip_with_official_tokenisation(tmp_path: Path, examples):
    write_split_files(tmp_path, {"train": examples[:20]})
    path = tmp_path / "basic_train.tsv"
    assert path.read_text().splitlines()[0] == "Source\tTarget"
    split = read_split_file(path, MAX_LEN)
    assert split.inputs.shape == (20, MAX_LEN)
    assert split.targets.tolist() == [value for _, value in examples[:20]]
    first = examples[0][0].replace("]", "X").replace("(", "").replace(")", "").split()
    assert split.inputs[0, : len(first)].tolist() == [TOKEN_IDS[t] for t in first]
    assert (split.inputs[0, len(first):] == 0).all()


@pytest.mark.parametrize(
    "row, message",
    [
        ("[MAX 1 2 ]", "expected 2 tab-separated columns, got 1"),
        ("[MAX 1 2 ]\t2\textra", "expected 2 tab-separated columns, got 3"),
        ("[MAX 1 2 ]\ttwo", "label 'two' is not an integer"),
        ("[MAX 1 2 ]\t12", "label 12 out of range 0..9"),
        ("[POW 1 2 ]\t2", "unknown ListOps token '[POW'"),
    ],
)
def test_bad_rows_name_file_and_line(tmp_path: Path, row: str, message: str):
    path = tmp_path / "basic_val.tsv"
    path.write_text("Source\tTarget\n( ( [MIN 1 ) 2 ] )\t1\n" + row + "\n")
    with pytest.raises(BenchError) as error:
        read_split_file(path, 64)
    assert f"{path}:3:" in str(error.value) and message in str(error.value)


def test_missing_header_is_an_error(tmp_path: Path):
    path = tmp_path / "basic_test.tsv"
    path.write_text("( ( [MIN 1 ) 2 ] )\t1\n")
    with pytest.raises(BenchError, match=r":1: expected header Source<TAB>Target"):
        read_split_file(path, 64)
