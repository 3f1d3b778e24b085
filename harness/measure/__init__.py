"""Stage 3, what executed: MACs (fvcore with our handles), time and peak memory, the efficiency sweep, environment.

Imports `training` (to build the layer it measures), `methods` and `bench_common`; never `sweep` or `report`.
"""
