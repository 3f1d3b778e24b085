"""The code's layout is a contract: stages import one way, no module imports in a circle.

Every import is read from the source (module level and inside functions), so a lazy import that
closes a loop is caught as well as a top-level one.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("bench_common", "methods", "lra", "harness")

# Which stages of harness/ each stage may import (besides itself, methods, lra and bench_common).
STAGE_IMPORTS = {
    "training": set(),
    "config": {"training"},
    "measure": {"training"},
    "sweep": {"config", "training", "measure"},
    "report": set(),  # only harness.sweep.records, checked apart
    "cli": {"config", "training", "measure", "sweep", "report"},
}


def _module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: Path) -> set[str]:
    """Absolute project modules a file imports (`from a.b import c` counts a.b.c when c is a module)."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
            found.update(f"{node.module}.{alias.name}" for alias in node.names)
    return {name for name in found if name.split(".")[0] in PACKAGES}


def _graph() -> dict[str, set[str]]:
    files = {_module_name(p): p for pkg in PACKAGES for p in (ROOT / pkg).rglob("*.py")}
    return {name: {m for m in _imports(path) if m in files and m != name} for name, path in files.items()}


GRAPH = _graph()


def _stage(module: str) -> str:
    parts = module.split(".")
    return parts[1] if parts[0] == "harness" and len(parts) > 1 else parts[0]


def test_no_module_imports_in_a_circle():
    state: dict[str, int] = {}  # 1 = on the current path, 2 = done

    def visit(module: str, path: list[str]) -> None:
        state[module] = 1
        for target in sorted(GRAPH[module]):
            if state.get(target) == 1:
                cycle = path[path.index(target):] + [target] if target in path else [module, target]
                pytest.fail("import cycle: " + " -> ".join(cycle))
            if target not in state:
                visit(target, path + [target])
        state[module] = 2

    for module in sorted(GRAPH):
        if module not in state:
            visit(module, [module])


@pytest.mark.parametrize("module", sorted(m for m in GRAPH if m.startswith("harness.")))
def test_harness_stages_import_one_way(module):
    stage = _stage(module)
    for target in GRAPH[module]:
        if not target.startswith("harness.") or _stage(target) == stage:
            continue
        if stage == "report":
            assert target == "harness.sweep.records", f"{module} imports {target}: reports read records only"
        else:
            assert _stage(target) in STAGE_IMPORTS[stage], f"{module} ({stage}) may not import {target}"


@pytest.mark.parametrize("package", ["methods", "lra", "bench_common"])
def test_plugins_and_tasks_stay_apart(package):
    forbidden = {"methods": {"harness", "lra"}, "lra": {"harness", "methods"},
                 "bench_common": {"harness", "lra", "methods"}}[package]
    for module, targets in GRAPH.items():
        if module.split(".")[0] == package:
            bad = {t for t in targets if t.split(".")[0] in forbidden}
            assert not bad, f"{module} imports {sorted(bad)}"


def test_each_stage_says_what_it_does_and_may_import():
    for stage in ("config", "training", "measure", "sweep", "report"):
        doc = ast.get_docstring(ast.parse((ROOT / "harness" / stage / "__init__.py").read_text()))
        assert doc and "Imports" in doc, f"harness/{stage}/__init__.py needs its two-line docstring"


def test_the_checker_sees_a_planted_cycle(tmp_path, monkeypatch):
    """Mutation check: the cycle test must fail on a graph with a loop."""
    monkeypatch.setitem(GRAPH, "harness.training.loop", GRAPH["harness.training.loop"] | {"harness.sweep.runner"})
    with pytest.raises(pytest.fail.Exception, match="import cycle"):
        test_no_module_imports_in_a_circle()


def test_the_checker_sees_a_stage_imported_against_the_arrows(monkeypatch):
    """Mutation check: training may import no other stage, so a planted import of the sweep fails."""
    monkeypatch.setitem(GRAPH, "harness.training.loop", GRAPH["harness.training.loop"] | {"harness.sweep.runner"})
    with pytest.raises(AssertionError, match="harness.training.loop \\(training\\) may not import harness.sweep.runner"):
        test_harness_stages_import_one_way("harness.training.loop")
