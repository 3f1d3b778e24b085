"""Stage 2, one model trained: the encoder with a pluggable core, batches, the loop, checkpoints, DDP, bootstrap.

Imports `methods`, `lra` and `bench_common` only; never `config`, `measure`, `sweep` or `report`.
"""
