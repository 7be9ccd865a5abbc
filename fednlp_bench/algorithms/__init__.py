"""Algorithm registry: built-ins, entry-point plugins and ``path/to/file.py:ClassName``.

Plugins register under the entry-point group ``fednlp_bench.algorithms``
(``name = package.module:ClassName``). A broken plugin never takes down the
others: :func:`discover` records its error and :func:`get` raises a clear
:class:`PluginError` naming it.
"""
from __future__ import annotations

import difflib
import importlib
import importlib.util
import inspect
from dataclasses import dataclass
from importlib.metadata import entry_points
from pathlib import Path

from fednlp_bench.algorithms.base import Aggregate, Algorithm, ClientContext, ClientResult, NoHParams
from fednlp_bench.errors import PluginError  # noqa: F401 - re-exported

ENTRY_POINT_GROUP = "fednlp_bench.algorithms"
CENTRALIZED = "centralized"

BUILTINS: dict[str, str] = {
    "fedavg": "fednlp_bench.algorithms.fedavg:FedAvg",
    "fedprox": "fednlp_bench.algorithms.fedprox:FedProx",
    "fedadam": "fednlp_bench.algorithms.fedopt:FedAdam",
    "fedyogi": "fednlp_bench.algorithms.fedopt:FedYogi",
    "fedadagrad": "fednlp_bench.algorithms.fedopt:FedAdagrad",
    "fedavgm": "fednlp_bench.algorithms.fedopt:FedAvgM",
    "scaffold": "fednlp_bench.algorithms.scaffold:Scaffold",
    "fednova": "fednlp_bench.algorithms.fednova:FedNova",
}


@dataclass
class Entry:
    name: str
    source: str  # "builtin", "entry-point <dist>", or a file path
    target: str
    error: str | None = None


def _check_class(obj: object, label: str) -> type[Algorithm]:
    if not (inspect.isclass(obj) and issubclass(obj, Algorithm)):
        raise PluginError(f"algorithm plugin {label}: {obj!r} is not a subclass of fednlp_bench.algorithms.Algorithm")
    for hook in ("client_update", "server_update"):
        if not callable(getattr(obj, hook, None)):
            raise PluginError(f"algorithm plugin {label}: missing method {hook}()")
    return obj


def _import_target(target: str, label: str) -> type[Algorithm]:
    module, _, attr = target.partition(":")
    try:
        mod = importlib.import_module(module)
    except Exception as exc:  # a plugin may raise anything at import time
        raise PluginError(f"algorithm plugin {label}: cannot import '{module}' ({exc.__class__.__name__}: {exc})") from None
    if not hasattr(mod, attr):
        raise PluginError(f"algorithm plugin {label}: module '{module}' has no attribute '{attr}'")
    return _check_class(getattr(mod, attr), label)


def load_file(spec: str) -> type[Algorithm]:
    """Load ``path/to/file.py:ClassName``."""
    path_text, _, cls_name = spec.rpartition(":")
    path = Path(path_text)
    if not cls_name or not path_text:
        raise PluginError(f"algorithm '{spec}': expected path/to/file.py:ClassName")
    if not path.is_file():
        raise PluginError(f"algorithm plugin file '{path}' does not exist")
    module_name = f"fednlp_bench_plugin_{path.stem}"
    mod_spec = importlib.util.spec_from_file_location(module_name, path)
    module = importlib.util.module_from_spec(mod_spec)
    try:
        mod_spec.loader.exec_module(module)
    except Exception as exc:
        raise PluginError(f"algorithm plugin {spec}: error while importing ({exc.__class__.__name__}: {exc})") from None
    if not hasattr(module, cls_name):
        raise PluginError(f"algorithm plugin {spec}: file has no class '{cls_name}'")
    return _check_class(getattr(module, cls_name), spec)


def discover() -> dict[str, Entry]:
    """All known algorithms with their source; plugin load errors are recorded, not raised."""
    found = {name: Entry(name, "builtin", target) for name, target in BUILTINS.items()}
    found[CENTRALIZED] = Entry(CENTRALIZED, "builtin", "fednlp_bench.centralized (reference baseline)")
    for ep in entry_points(group=ENTRY_POINT_GROUP):
        dist = getattr(ep.dist, "name", "?") if ep.dist is not None else "?"
        if ep.name in found:
            found[f"{ep.name}@{dist}"] = Entry(ep.name, f"entry-point {dist}", ep.value,
                                                f"name clashes with {found[ep.name].source} '{ep.name}'")
            continue
        entry = Entry(ep.name, f"entry-point {dist}", ep.value)
        try:
            _import_target(ep.value, f"'{ep.name}' ({dist})")
        except PluginError as exc:
            entry.error = str(exc)
        found[ep.name] = entry
    return found


def get(name: str) -> type[Algorithm]:
    """Resolve an algorithm name or ``file.py:Class`` to its class."""
    if name.endswith(".py") or ".py:" in name:
        return load_file(name)
    if name in BUILTINS:
        return _import_target(BUILTINS[name], f"'{name}'")
    for ep in entry_points(group=ENTRY_POINT_GROUP):
        if ep.name == name:
            dist = getattr(ep.dist, "name", "?") if ep.dist is not None else "?"
            return _import_target(ep.value, f"'{name}' ({dist})")
    options = sorted(discover())
    close = difflib.get_close_matches(name, options, n=1)
    hint = f"; did you mean '{close[0]}'?" if close else ""
    raise PluginError(f"unknown algorithm '{name}' (available: {', '.join(options)}){hint}")


__all__ = [
    "Aggregate", "Algorithm", "ClientContext", "ClientResult", "NoHParams",
    "PluginError", "discover", "get", "load_file", "ENTRY_POINT_GROUP", "CENTRALIZED",
]
