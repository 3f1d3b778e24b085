"""Run functions for tests/test_executors.py: importable by name in spawned processes and Ray workers.

Each stands in for harness.sweep.runner.execute_run and misbehaves in one way. Kept free of torch so a
spawned child starts fast and fits a small memory cap.
"""

import inspect
import os
import signal
import time

from harness.sweep.records import RunSpec


def report_pid(spec: RunSpec) -> dict:
    """A well-behaved run: an ok row (the keys a test reads) that says which process ran it."""
    return {"method": spec.method, "task": spec.task, "seed": spec.seed, "status": "ok", "reason": None,
            "config": spec.config, "diagnostics": {"pid": os.getpid()}}


def by_seed(spec: RunSpec) -> dict:
    """Misbehaves according to the seed: 0 ok, 1 hangs, 2 is killed, 3 raises, 4 exhausts memory."""
    if spec.seed == 1:
        time.sleep(3600)
    if spec.seed == 2:
        os.kill(os.getpid(), signal.SIGKILL)
    if spec.seed == 3:
        raise ValueError("broken run")
    if spec.seed == 4:
        hog = bytearray(4 * 2**30)  # 4 GiB: over the test's cap
        hog[0] = 1
    return report_pid(spec)


def exit_abruptly(spec: RunSpec) -> dict:
    """Ends the worker process without a word (a segfault or os._exit in native code)."""
    if spec.seed == 2:
        os._exit(3)
    return report_pid(spec)


def list_methods(spec: RunSpec) -> dict:
    """Loads the run's plugins as execute_run does; an ok row listing the methods registered here."""
    from methods import get_attention_class, list_attentions, load_plugin

    for plugin in spec.config["runtime"]["plugins"]:
        load_plugin(plugin)
    record = report_pid(spec)
    record["diagnostics"]["methods"] = list_attentions()
    record["diagnostics"]["plugin_files"] = {
        name: inspect.getfile(get_attention_class(name)) for name in list_attentions()
    }
    return record


def touch_marker(spec: RunSpec) -> dict:
    """Leaves a file named in the config, so a test can tell whether any run started at all."""
    with open(spec.config["marker"], "w") as handle:
        handle.write(spec.key)
    return report_pid(spec)


def sleep_and_time(spec: RunSpec) -> dict:
    """Sleeps `spec.config["sleep_s"]`; an ok row with the wall-clock start and end of the sleep."""
    record = report_pid(spec)
    start = time.time()
    time.sleep(spec.config["sleep_s"])
    record["diagnostics"].update(start=start, end=time.time())
    return record
