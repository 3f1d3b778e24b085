# The two entry points of the README. Both set up .venv first (idempotent, offline-safe).
PY := .venv/bin/python

.PHONY: bench test test-all

# Two runs side by side with one torch thread each keep 2 cores busier than one 2-thread run of
# the quick suite's small models; threads=1 also gives the runs results/quick's config hashes.
MAIN_JOB_FLAGS := --executor subprocess --workers 2 --set threads=1

bench:  ## the main job: the quick suite's main-job tasks (many-keys recall, ListOps), offline, then its report; ARGS adds flags
	scripts/setup.sh run
	$(PY) run_benchmark.py $(MAIN_JOB_FLAGS) $(ARGS)

test:  ## the test suite CI runs (slow multi-process checks included, heavy ones not)
	scripts/setup.sh dev
	$(PY) -m pytest -m "not heavy and not gpu" -q

test-all:  ## every CPU test, the heavy ones too
	scripts/setup.sh dev
	$(PY) -m pytest -m "not gpu" -q
