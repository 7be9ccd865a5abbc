"""One registry type for everything a user can name: algorithms, tasks, partitioners, samplers.

A :class:`Registry` holds

* **built-ins**, registered lazily as ``"module:attribute"`` strings (``fednlp-bench list`` stays
  fast: nothing is imported until it is asked for);
* **entry-point plugins** of an installed package (``[options.entry_points]`` group such as
  ``fednlp_bench.algorithms``, ``name = package.module:Object``);
* optionally **file plugins** written as ``path/to/file.py:Object`` (algorithms).

Every registry gives the same errors: an unknown name lists what is available with a
did-you-mean hint; a plugin that cannot be imported or is the wrong kind of object raises the
registry's error naming the plugin; :meth:`Registry.discover` lists broken plugins with their
error instead of raising, so one broken package never hides the others. Plugins may not take a
built-in's name (their results would pass for the built-in's on a leaderboard).
"""
from __future__ import annotations

import hashlib
import importlib
import importlib.util
import inspect
from dataclasses import dataclass
from importlib.metadata import entry_points
from pathlib import Path
from typing import Any, Callable, Generic, TypeVar

from fednlp_bench.errors import UserError
from fednlp_bench.hparams import did_you_mean

T = TypeVar("T")


@dataclass
class Entry:
    """One name a registry knows: where it comes from and, for a broken plugin, why it fails."""

    name: str
    source: str  # "builtin", "entry-point <distribution>", or a file path
    target: str
    error: str | None = None


class Registry(Generic[T]):
    """Name -> object, from built-ins, an entry-point group and (optionally) ``file.py:Name``.

    ``check(obj, label)`` validates a loaded object (e.g. "is an Algorithm subclass") and
    returns it, raising ``error`` otherwise.
    """

    def __init__(self, kind: str, error: type[UserError], group: str | None = None,
                 check: Callable[[Any, str], T] | None = None, files: bool = False) -> None:
        self.kind = kind
        self.error = error
        self.group = group
        self.files = files
        self._check = check or (lambda obj, label: obj)
        self._builtins: dict[str, str | T] = {}

    # ---- registration ---------------------------------------------------------------
    def add(self, name: str, target: str | T) -> None:
        """Register a built-in: an object, or ``"module:attribute"`` imported on first use."""
        if name in self._builtins and self._builtins[name] is not target:
            raise self.error(f"{self.kind} '{name}' is already registered")
        self._builtins[name] = target

    def remove(self, name: str) -> None:
        self._builtins.pop(name, None)

    def register(self, name: str) -> Callable[[T], T]:
        """Decorator form of :meth:`add`."""

        def deco(obj: T) -> T:
            self.add(name, obj)
            return obj

        return deco

    # ---- lookup ---------------------------------------------------------------------
    def builtins(self) -> list[str]:
        return sorted(self._builtins)

    def _entry_points(self) -> list[Any]:
        return list(entry_points(group=self.group)) if self.group else []

    def names(self) -> list[str]:
        """Built-in and entry-point names (broken plugins included)."""
        return sorted({*self._builtins, *(ep.name for ep in self._entry_points())})

    def is_file_spec(self, name: str) -> bool:
        return self.files and (name.endswith(".py") or ".py:" in name)

    def get(self, name: str) -> T:
        """The object registered as ``name`` (or loaded from ``file.py:Name``)."""
        if self.is_file_spec(name):
            return self._load_file(name)
        if name in self._builtins:
            target = self._builtins[name]
            return self._import(target, f"'{name}'") if isinstance(target, str) else target
        for ep in self._entry_points():
            if ep.name == name:
                return self._import(ep.value, f"'{name}' ({_dist(ep)})", plugin=True)
        raise self.error(f"unknown {self.kind} '{name}' {did_you_mean(name, self.names(), 'available')}")

    def discover(self) -> dict[str, Entry]:
        """Every known name with its source; a broken plugin carries its error instead of raising."""
        found = {name: Entry(name, "builtin", t if isinstance(t, str) else _qualname(t))
                 for name, t in self._builtins.items()}
        for ep in self._entry_points():
            dist = _dist(ep)
            if ep.name in found:
                found[f"{ep.name}@{dist}"] = Entry(ep.name, f"entry-point {dist}", ep.value,
                                                    f"name clashes with {found[ep.name].source} '{ep.name}'")
                continue
            entry = Entry(ep.name, f"entry-point {dist}", ep.value)
            try:
                self._import(ep.value, f"'{ep.name}' ({dist})", plugin=True)
            except UserError as exc:
                entry.error = str(exc)
            found[ep.name] = entry
        return found

    def identity(self, name: str) -> dict[str, Any]:
        """Where ``name``'s code comes from, precisely enough to tell two versions apart:
        ``builtin``; an entry point's distribution and version; a file plugin's path and sha256."""
        if self.is_file_spec(name):
            path = Path(name.rpartition(":")[0])
            return {"source": "file", "path": str(path), "sha256": hashlib.sha256(path.read_bytes()).hexdigest()}
        if name in self._builtins:
            return {"source": "builtin"}
        for ep in self._entry_points():
            if ep.name == name:
                dist = ep.dist
                return {"source": "entry-point", "distribution": _dist(ep),
                        "version": getattr(dist, "version", None) if dist is not None else None, "target": ep.value}
        return {"source": "unknown"}

    # ---- loading --------------------------------------------------------------------
    def _import(self, target: str, label: str, plugin: bool = False) -> T:
        module, _, attr = target.partition(":")
        what = f"{self.kind} plugin {label}" if plugin else f"{self.kind} {label}"
        try:
            mod = importlib.import_module(module)
        except Exception as exc:  # a plugin may raise anything at import time
            raise self.error(f"{what}: cannot import '{module}' ({exc.__class__.__name__}: {exc})") from None
        if not hasattr(mod, attr):
            raise self.error(f"{what}: module '{module}' has no attribute '{attr}'")
        return self._checked(getattr(mod, attr), what, plugin)

    def _load_file(self, spec: str) -> T:
        """``path/to/file.py:Name``, imported under a private module name."""
        path_text, _, attr = spec.rpartition(":")
        if not attr or not path_text:
            raise self.error(f"{self.kind} '{spec}': expected path/to/file.py:ClassName")
        path = Path(path_text)
        if not path.is_file():
            raise self.error(f"{self.kind} plugin file '{path}' does not exist")
        mod_spec = importlib.util.spec_from_file_location(f"fednlp_bench_plugin_{path.stem}", path)
        module = importlib.util.module_from_spec(mod_spec)
        try:
            mod_spec.loader.exec_module(module)
        except Exception as exc:
            raise self.error(f"{self.kind} plugin {spec}: error while importing ({exc.__class__.__name__}: {exc})") \
                from None
        if not hasattr(module, attr):
            raise self.error(f"{self.kind} plugin {spec}: file has no class '{attr}'")
        return self._checked(getattr(module, attr), f"{self.kind} plugin {spec}", plugin=True)

    def _checked(self, obj: Any, what: str, plugin: bool) -> T:
        obj = self._check(obj, what)
        if plugin:
            self.reserved_name(getattr(obj, "name", None), what)
        return obj

    def reserved_name(self, name: str | None, what: str) -> None:
        """Refuse a plugin that declares a built-in's name (it would pass for the built-in)."""
        if isinstance(name, str) and name in self._builtins:
            raise self.error(f"{what}: declares the name '{name}' of a built-in {self.kind}; plugins must use "
                             f"a name of their own")


def subclass_of(base: type, public: str, error: type[UserError], methods: tuple[str, ...] = ()) -> Callable[[Any, str], Any]:
    """A registry ``check``: the loaded object must be a subclass of ``base`` (named ``public`` in the
    message, the import path a plugin author uses) with each of ``methods`` callable."""

    def check(obj: Any, label: str) -> Any:
        if not (inspect.isclass(obj) and issubclass(obj, base)):
            raise error(f"{label}: {obj!r} is not a subclass of {public}")
        for name in methods:
            if not callable(getattr(obj, name, None)):
                raise error(f"{label}: missing method {name}()")
        return obj

    return check


def _dist(ep: Any) -> str:
    return getattr(ep.dist, "name", "?") if ep.dist is not None else "?"


def _qualname(obj: Any) -> str:
    return f"{getattr(obj, '__module__', '?')}:{getattr(obj, '__qualname__', repr(obj))}"
