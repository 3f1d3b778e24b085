"""Row-level TSV reading with one-line errors that name the file and line."""

from __future__ import annotations

import csv
import sys
from pathlib import Path
from typing import Iterator

from bench_common import BenchError
from bench_common.files import write_atomic

# Retrieval rows hold whole papers in one field; the csv default limit (128 KiB) is too small.
csv.field_size_limit(min(sys.maxsize, 2**31 - 1))


def read_rows(path: Path, columns: int, header: tuple[str, ...] = ()) -> Iterator[tuple[int, list[str]]]:
    """Yields (line number, fields) for each data row; checks the header and the column count.

    Quoting is off (fields never contain tabs or newlines in the official files, and the official
    readers do not unquote Retrieval text either).
    """
    with open(path, encoding="utf-8", newline="") as stream:
        reader = csv.reader(stream, delimiter="\t", quoting=csv.QUOTE_NONE)
        for line, row in enumerate(_checked(reader, path), start=1):
            if line == 1 and header:
                if tuple(row) != header:
                    raise BenchError(f"{path}:1: expected header {'<TAB>'.join(header)}, got {'<TAB>'.join(row)[:80]!r}")
                continue
            if not row:
                continue
            if len(row) != columns:
                raise BenchError(f"{path}:{line}: expected {columns} tab-separated columns, got {len(row)}")
            yield line, row


def _checked(reader: Iterator[list[str]], path: Path) -> Iterator[list[str]]:
    """The reader's rows; bytes that are not UTF-8 text or a NUL byte are one-line errors."""
    try:
        yield from reader
    except UnicodeDecodeError as err:
        raise BenchError(f"{path}: not UTF-8 text ({err.reason}: byte 0x{err.object[err.start]:02x})") from None
    except csv.Error as err:
        raise BenchError(f"{path}:{getattr(reader, 'line_num', 0)}: unreadable TSV row ({err})") from None


def parse_label(path: Path, line: int, text: str, num_classes: int) -> int:
    """An integer label in 0..num_classes-1 ("1.0" is accepted: the AAN files store floats)."""
    try:
        value = float(text)
    except ValueError:
        value = float("nan")
    if not value.is_integer():
        raise BenchError(f"{path}:{line}: label {text!r} is not an integer")
    if not 0 <= value < num_classes:
        raise BenchError(f"{path}:{line}: label {int(value)} out of range 0..{num_classes - 1}")
    return int(value)


def write_rows(path: Path, rows: list[list[str]], header: tuple[str, ...] = ()) -> None:
    """Writes a TSV atomically (temporary file, then rename)."""
    lines = (["\t".join(header)] if header else []) + ["\t".join(map(str, row)) for row in rows]
    text = "\n".join(lines) + "\n"
    write_atomic(path, lambda handle: handle.write(text))
