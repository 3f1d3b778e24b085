"""Test plugin: the tiny test task (tests/conftest.py) and a suite over it, in any process.

Tests that run the real CLI (torchrun ranks, subprocess-executor children) load it with --plugin,
since pytest's monkeypatching does not reach other processes. Needs tests/ on PYTHONPATH.
Idempotent: importing it twice changes nothing.
"""

from conftest import TINY_TASKS
from harness.sweep import runner
from harness.config.suites import SUITES, Suite, plain, register_suite

SUITE = "scaleout-tiny"

if not getattr(runner.load_task, "finds_tiny_tasks", False):
    _registry_load_task = runner.load_task

    def load_task(name: str):
        return TINY_TASKS[name] if name in TINY_TASKS else _registry_load_task(name)

    load_task.finds_tiny_tasks = True
    runner.load_task = load_task

if SUITE not in SUITES:
    register_suite(Suite(name=SUITE, description="scale-out tests: the tiny majority task, full and sdpa",
                         tasks=("tiny-majority",), methods=(plain("full"), plain("sdpa")), family="lra"))
