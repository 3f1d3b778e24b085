"""Third-party attention methods: the entry-point group and explicit --plugin files/modules.

Plugin code runs only when the user asks for it: by installing a package that declares the
`treeformer_bench.attention` entry-point group, or by naming a module or file with --plugin.
"""

from __future__ import annotations

import importlib
import importlib.metadata
import importlib.util
import sys
from pathlib import Path
from types import ModuleType

from bench_common import BenchError

ENTRY_POINT_GROUP = "treeformer_bench.attention"
_entry_points_loaded = False


def load_entry_point_plugins() -> None:
    """Imports every installed entry point of the group once; each registers its methods."""
    global _entry_points_loaded
    if _entry_points_loaded:
        return
    _entry_points_loaded = True
    for entry_point in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP):
        try:
            entry_point.load()
        except BenchError:
            raise
        except Exception as err:  # a broken third-party package must say which one it is
            raise BenchError(
                f"attention plugin entry point '{entry_point.name}' ({entry_point.value}) "
                f"failed to load: {type(err).__name__}: {err}"
            ) from err


def load_plugin(spec: str) -> ModuleType:
    """Imports a plugin given as a dotted module name or a path to a .py file."""
    path = Path(spec)
    try:
        if spec.endswith(".py") or path.exists():
            if path.is_dir():
                raise BenchError("is a directory; expected a .py file or a module name")
            if not path.is_file():
                raise BenchError("no such file; expected a .py file or a module name")
            module_name = f"treeformer_bench_plugin_{path.stem}_{abs(hash(str(path.resolve())))}"
            if module_name in sys.modules:
                return sys.modules[module_name]
            loader_spec = importlib.util.spec_from_file_location(module_name, path)
            module = importlib.util.module_from_spec(loader_spec)
            sys.modules[module_name] = module
            try:
                loader_spec.loader.exec_module(module)
            except BaseException:
                del sys.modules[module_name]
                raise
            return module
        return importlib.import_module(spec)
    except BenchError as err:
        raise BenchError(f"--plugin {spec}: {err}") from err
    except ModuleNotFoundError as err:
        raise BenchError(f"--plugin {spec}: cannot import it ({err}); give a module name or a .py path") from err
    except Exception as err:
        line = _plugin_line(err, path)
        raise BenchError(f"--plugin {spec}{line}: raised {type(err).__name__} on import: {err}") from err


def _plugin_line(err: BaseException, path: Path) -> str:
    """':LINE' of the innermost traceback frame inside the plugin file, if any."""
    tb, line = err.__traceback__, ""
    while tb is not None:
        if Path(tb.tb_frame.f_code.co_filename).resolve() == path.resolve():
            line = f":{tb.tb_lineno}"
        tb = tb.tb_next
    return line
