"""The shared one-line error form and atomic write (bench_common)."""

import os

import pytest

from bench_common import describe_error, first_line
from bench_common.files import write_atomic


def test_first_line_is_the_first_non_blank_line_cut_or_the_type_name():
    assert first_line(ValueError("\n   boom  \nsecond line")) == "boom"
    assert first_line(RuntimeError("")) == "RuntimeError"
    assert first_line(OSError("x" * 400), limit=10) == "x" * 10


def test_describe_error_names_the_type_once_when_the_message_is_empty():
    assert describe_error(KeyError()) == "KeyError"  # not "KeyError: KeyError"
    assert describe_error(ValueError("\n bad value \nmore")) == "ValueError: bad value"


def test_atomic_write_uses_a_pid_named_temporary_and_keeps_the_old_file_on_failure(tmp_path):
    path = tmp_path / "r.json"
    seen = []
    write_atomic(path, lambda handle: (seen.extend(os.listdir(tmp_path)), handle.write("new")))
    assert seen == [f".r.json.{os.getpid()}.tmp"]  # the name the sweep's stale-file cleanup looks for
    assert path.read_text() == "new"

    def fail(handle):
        handle.write("half")
        raise OSError("disk full")

    with pytest.raises(OSError):
        write_atomic(path, fail)
    assert path.read_text() == "new" and os.listdir(tmp_path) == ["r.json"]
