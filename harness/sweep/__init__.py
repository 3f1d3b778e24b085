"""Stage 4, runs to records: a request becomes run specs, executors run them, each run becomes a record.

Imports `config`, `training`, `measure`, `methods`, `lra`; never `report`.
"""
