"""Where and how a run was made: package versions, device, machine, git commit, command line; and
the one check of a requested device."""

from __future__ import annotations

import functools
import importlib.metadata
import os
import platform
import shlex
import subprocess
import sys
from pathlib import Path
from typing import Any, Optional

REPO_ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("torch", "numpy", "fvcore", "tqdm", "pandas", "tensorflow-datasets", "xformers", "ray")


@functools.lru_cache(maxsize=None)
def versions() -> dict[str, str]:
    found = {"python": platform.python_version()}
    for name in PACKAGES:
        try:
            found[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            continue
    return found


def resolve_device(requested: str) -> str:
    """cpu or cuda from a --device value (auto: cuda when available); cuda without a GPU, or any
    other value, is a one-line usage error before anything runs."""
    import torch

    from bench_common import BenchError

    if requested == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if requested not in ("cpu", "cuda"):
        raise BenchError(f"--device: expected cpu, cuda or auto, got {requested!r}")
    if requested == "cuda" and not torch.cuda.is_available():
        raise BenchError("--device cuda: no CUDA device is available here (torch.cuda.is_available() is False)")
    return requested


def device_name(device: str) -> str:
    import torch

    if str(device).startswith("cuda") and torch.cuda.is_available():
        return f"{device} ({torch.cuda.get_device_name(torch.device(device))})"
    return f"cpu ({platform.processor() or platform.machine()}, {os.cpu_count()} cores, {torch.get_num_threads()} threads)"


def cpu_model(default: str = "unknown") -> str:
    """The CPU's model name from /proc/cpuinfo (Linux), else `default`: benchmark files name the machine."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return default


@functools.lru_cache(maxsize=None)
def git_commit() -> str | None:
    """HEAD of the checkout the code runs from, with '-dirty' when tracked files outside results/
    changed: results/ holds outputs, which a sweep writing its records there changes itself."""
    try:
        head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=REPO_ROOT, capture_output=True,
                              text=True, timeout=10, check=True).stdout.strip()
        outside_results = ["--", ":(top)", ":(top,exclude)results"]
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no", *outside_results],
                               cwd=REPO_ROOT, capture_output=True, text=True, timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return head + ("-dirty" if dirty else "")


def command_line() -> str:
    """This process's command line, as a user would type it."""
    return " ".join(shlex.quote(a) for a in [Path(sys.argv[0]).name, *sys.argv[1:]])


def environment(device: str, command: Optional[str] = None) -> dict[str, Any]:
    """The record's "env" block; `command` is the user's, where this process is a worker started for it."""
    return {
        "versions": versions(),
        "device": device_name(device),
        "machine": f"{platform.node()} {platform.platform()}",
        "git_commit": git_commit(),
        "command": command or command_line(),
    }


def available_memory_bytes() -> int | None:
    """Memory the kernel says a new allocation can get now (MemAvailable), or None where unknown."""
    try:
        with open("/proc/meminfo", encoding="ascii") as meminfo:
            for line in meminfo:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError):
        pass
    return None
