"""Stage 5, records to tables and plots: a pure function of the record files.

Imports only `sweep.records` (to read them) and `bench_common`; never builds a model or imports `methods`.
"""
