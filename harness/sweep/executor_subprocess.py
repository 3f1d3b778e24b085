"""The `subprocess` executor: each run in a fresh process with a wall-clock limit and a memory cap.

A run that crashes the interpreter, exhausts memory or hangs takes only its own process down: the
driver turns it into an `error`/`oom`/`timeout` row and goes on with the sweep. Processes come from
multiprocessing's fork server: a fresh interpreter that imports torch and the harness once
(`PRELOAD`, seconds of start-up that every spawned run used to pay again) and forks one
child per run. Nothing of the driver is inherited (its open data sources and thread pools are not
fork-safe), and the server has run no torch operation, so no thread pool exists to fork. Each run
leads its own process group, so a kill also reaches any worker processes it started.
"""

from __future__ import annotations

import multiprocessing
import os
import resource
import signal
import threading
import time
from multiprocessing.connection import Connection, wait
from typing import Any, Optional

from bench_common import BenchError
from harness.sweep.executors import OnRecord, RunFn
from harness.sweep.records import Record, RunSpec, failure_record
from harness.training.failures import classify_exception

# What the fork server imports before forking runs: torch, torch._dynamo (which building any torch
# optimizer imports) and the run function's module with the harness, tasks and methods behind it.
PRELOAD = ["torch", "torch._dynamo", "harness.sweep.runner"]
# Slack beyond the run's own train.time_limit_s: process start, data preparation, FLOP counting
# and the final test evaluation all happen outside the training clock.
DEFAULT_GRACE_S = 120.0
_EXIT_GRACE_S = 10.0  # time a child that has reported gets to exit before it is killed


class SubprocessExecutor:
    """Runs each spec in its own Python process (forked by the fork server), `workers` of them side by side.

    timeout_s: hard wall-clock limit per run; by default the run's `train.time_limit_s` plus
    `grace_s`, and no limit when neither is set. memory_gb: address-space cap (RLIMIT_AS) of the
    run's process on CPU runs (virtual memory: importing torch alone maps ~0.7 GiB, so allow
    2 GiB or more); CUDA runs are not capped this way because the CUDA driver reserves far more
    virtual memory than it uses. workers: runs at a time; specs start in order, and records reach
    `on_record` as runs finish. Two one-thread runs keep two cores busier than one two-thread run
    of the small models the quick suite trains (set the runs' `threads` to match).
    """

    name = "subprocess"

    def __init__(
        self,
        timeout_s: Optional[float] = None,
        memory_gb: Optional[float] = None,
        grace_s: float = DEFAULT_GRACE_S,
        workers: int = 1,
    ):
        for flag, value in (("timeout_s", timeout_s), ("memory_gb", memory_gb)):
            if value is not None and not value > 0:
                raise BenchError(f"--executor subprocess: {flag} must be a positive number, got {value}")
        if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
            raise BenchError(f"--executor subprocess: workers must be a positive integer, got {workers!r}")
        self.timeout_s = timeout_s
        self.memory_gb = memory_gb
        self.grace_s = grace_s
        self.workers = workers
        self._context = multiprocessing.get_context("forkserver")
        self._context.set_forkserver_preload(PRELOAD)

    def map(self, run_fn: RunFn, specs: list[RunSpec], on_record: OnRecord) -> None:
        waiting = list(reversed(specs))  # popped from the end: in order
        running: list[_Child] = []
        try:
            while waiting or running:
                while waiting and len(running) < self.workers:
                    running.append(self._start(run_fn, waiting.pop()))
                for child in _wait_any(running):
                    running.remove(child)
                    on_record(child.spec, self._finish(child))
        finally:
            for child in running:  # interrupted: no run outlives the sweep
                child.close()

    def limit_for(self, spec: RunSpec) -> Optional[float]:
        """Wall-clock seconds the run's process may live, or None for no limit."""
        if self.timeout_s is not None:
            return self.timeout_s
        train_limit = (spec.config.get("train") or {}).get("time_limit_s")
        return None if train_limit is None else float(train_limit) + self.grace_s

    def run_one(self, run_fn: RunFn, spec: RunSpec) -> Record:
        """Runs one spec in a child process and returns its record or its failure row."""
        records: list[Record] = []
        self.map(run_fn, [spec], lambda _, record: records.append(record))
        return records[0]

    def _start(self, run_fn: RunFn, spec: RunSpec) -> "_Child":
        memory_bytes = None
        if self.memory_gb is not None and not str(spec.config.get("device", "cpu")).startswith("cuda"):
            memory_bytes = int(self.memory_gb * 2**30)
        receiver, sender = self._context.Pipe(duplex=False)
        lifeline, held = self._context.Pipe(duplex=False)  # the driver holds `held` while it lives
        process = self._context.Process(
            target=_child_main,
            args=(sender, lifeline, run_fn, spec, memory_bytes),
            name=f"run {spec.key}",
        )
        limit = self.limit_for(spec)
        process.start()
        sender.close()  # the child holds the only write end: EOF on the pipe means it is gone
        lifeline.close()  # and the only read end of the lifeline: EOF there means the driver is gone
        deadline = None if limit is None else time.monotonic() + limit
        return _Child(spec, process, receiver, held, limit, deadline, memory_bytes is not None)

    def _finish(self, child: "_Child") -> Record:
        """The record of a child `_wait_any` found done; the child's process group is gone after."""
        try:
            record = child.outcome
            if child.reported:
                child.process.join(timeout=_EXIT_GRACE_S)  # a child that has sent its record exits by itself
            if child.capped and record["status"] == "oom":
                record["reason"] = f"{record['reason']} (under this executor's cap, --run-memory-gb {self.memory_gb:g})"
            return record
        finally:
            child.close()


class _Child:
    """One run's process, the read end of its pipe, its deadline and, once known, its outcome."""

    def __init__(self, spec: RunSpec, process: Any, receiver: Connection, lifeline: Connection,
                 limit: Optional[float], deadline: Optional[float], capped: bool):
        self.spec, self.process, self.receiver, self.lifeline = spec, process, receiver, lifeline
        self.limit, self.deadline, self.capped = limit, deadline, capped
        self.outcome: Optional[Record] = None
        self.reported = False

    def settle(self, ready: list[Any]) -> bool:
        """Sets `outcome` from what `wait` found ready or from the deadline; True once it is known."""
        spec = self.spec
        if self.receiver in ready:
            try:
                kind, *payload = self.receiver.recv()
                self.outcome = payload[0] if kind == "record" else failure_record(spec, *payload)
                self.reported = True
                return True
            except EOFError:
                pass  # the child died without sending: fall through to its exit code
        if self.receiver in ready or self.process.sentinel in ready:
            self.process.join()
            self.outcome = failure_record(spec, "error", _describe_exit(self.process.exitcode))
            return True
        if self.deadline is not None and time.monotonic() >= self.deadline:
            reason = f"run exceeded the executor's wall-clock limit of {self.limit:g} s and was killed"
            self.outcome = failure_record(spec, "timeout", reason)
            return True
        return False

    def close(self) -> None:
        _kill_group(self.process)
        self.process.join()
        self.receiver.close()
        self.lifeline.close()


def _wait_any(children: list[_Child]) -> list[_Child]:
    """Blocks until at least one child has an outcome (a record, its death or its deadline); those children."""
    deadlines = [child.deadline for child in children if child.deadline is not None]
    timeout = max(0.0, min(deadlines) - time.monotonic()) if deadlines else None
    handles = [handle for child in children for handle in (child.receiver, child.process.sentinel)]
    ready = wait(handles, timeout=timeout)
    return [child for child in children if child.settle(ready)]


def _describe_exit(exitcode: Optional[int]) -> str:
    if exitcode is not None and exitcode < 0:
        name = signal.Signals(-exitcode).name
        hint = " (the kernel's out-of-memory killer sends SIGKILL)" if name == "SIGKILL" else ""
        return f"run process was killed by {name}{hint} before reporting a record"
    return f"run process exited with status {exitcode} before reporting a record"


def _kill_group(process: Any) -> None:
    """Kills what is left of the child's process group: the child, and workers it started."""
    try:
        os.killpg(process.pid, signal.SIGKILL)
    except ProcessLookupError:  # the group is empty, or the child died before leading one
        if process.exitcode is None:
            process.kill()


def _child_main(sender: Connection, lifeline: Connection, run_fn: RunFn, spec: RunSpec,
                memory_bytes: Optional[int]) -> None:
    """Entry point of the run's process: own group, memory cap, run, send the outcome.

    Sends ("record", record), or ("failure", status, reason) for an exception, which the driver
    turns into a row: building it here could itself fail at the memory cap. The run loads the
    --plugin modules itself (execute_run reads them from the run config), from this same machine
    and working directory.
    """
    os.setpgrp()
    _exit_with_driver(lifeline)
    if memory_bytes is not None:
        resource.setrlimit(resource.RLIMIT_AS, (memory_bytes, memory_bytes))
    try:
        outcome = ("record", run_fn(spec))
    except BaseException as err:  # noqa: BLE001  every failure must become a row, not a lost run
        outcome = ("failure", *classify_exception(err))
    sender.send(outcome)
    sender.close()


def _exit_with_driver(lifeline: Connection) -> None:
    """Ends this run's process group when the driver dies (kill -9 of the sweep): an orphaned run
    would go on training, holding its CPU or GPU, beside the rerun that resumes the same run.

    The driver holds the lifeline's only write end and never writes: reading it returns at EOF,
    which the kernel signals when the driver's process is gone. (Watching for a new parent does not
    work here: the run's parent is the fork server, which outlives the driver while runs hold its
    pipe.)"""

    def watch() -> None:
        try:
            lifeline.recv()
        except (EOFError, OSError):
            pass
        os.killpg(os.getpgrp(), signal.SIGKILL)

    threading.Thread(target=watch, name="exit-with-driver", daemon=True).start()
