"""Pieces shared by `methods/`, `lra/` and `harness/`: the strict registry, the user-error type and
its one-line form of any error, and atomic file writes (`bench_common.files`).

It lives outside those packages so that `methods/` and `lra/` can both use it without importing
each other (the design's one-way dependency rule).
"""

from bench_common.errors import BenchError, describe_error, first_line
from bench_common.registry import Registry, check_option_keys

__all__ = ["BenchError", "Registry", "check_option_keys", "describe_error", "first_line"]
