"""A script of scripts/ loaded as a module, for the tests that call its functions."""

import importlib.util
import sys
from pathlib import Path
from types import ModuleType
from typing import Iterator

SCRIPTS = Path(__file__).resolve().parents[1] / "scripts"


def loaded_script(name: str) -> Iterator[ModuleType]:
    """Yields scripts/<name>.py as module `name` (registered in sys.modules while in use: its
    dataclasses look their module up there), then unregisters it; for a module-scoped fixture."""
    spec = importlib.util.spec_from_file_location(name, SCRIPTS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
        yield module
    finally:
        sys.modules.pop(name, None)
