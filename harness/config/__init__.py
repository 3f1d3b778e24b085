"""Stage 1, what to run: layered run configuration (defaults, task, suite, file, --set) and suites.

Imports `training` (for the model and training config types), `methods`, `lra` and `bench_common`.
"""
