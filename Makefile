# The two entry points of the README. Both set up .venv first (idempotent, offline-safe).
PY := .venv/bin/python

.PHONY: bench test test-all

bench:  ## the main job: the default (quick) suite, offline, then its report; ARGS adds flags
	scripts/setup.sh run
	$(PY) run_benchmark.py $(ARGS)

test:  ## the test suite CI runs (slow multi-process checks included, heavy ones not)
	scripts/setup.sh dev
	$(PY) -m pytest -m "not heavy and not gpu" -q

test-all:  ## every CPU test, the heavy ones too
	scripts/setup.sh dev
	$(PY) -m pytest -m "not gpu" -q
