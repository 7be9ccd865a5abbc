"""Typed hyper-parameters with declared ranges: one mechanism for algorithms, partitioners and config.

A component's parameters are a dataclass whose fields carry their rules in the field
metadata (via :func:`param`), so type coercion, range checks, did-you-mean errors and the
tuning search space are written once, here, instead of once per component::

    @dataclass(frozen=True)
    class FedProxHParams(Checked):
        mu: float = param(0.01, low=0.0, finite=True, search=[0.001, 0.01, 0.1, 1.0])

What the rules mean:

* the field's type hint decides coercion: ``float`` accepts ints (``1`` -> ``1.0``, so equal
  specs hash equally), ``int`` accepts integral floats (``2.0`` -> ``2``), ``bool`` accepts only
  booleans (``True`` is never a count, ``1`` is never a flag), ``X | None`` also accepts ``None``;
* ``low``/``high`` (``low_open``/``high_open`` for strict bounds), ``finite`` (no NaN/inf) and
  ``choices`` are checked after coercion; NaN fails every range;
* ``search`` is the small grid a tuner may try (:func:`search_space`).

Messages come in the two shapes users see: ``style="got"`` (``fl.rounds must be >= 1, got 0``)
for config keys and algorithms, ``style="assign"`` (``quantity: beta=0.0 must be > 0``) for
partitioner parameters. Both name the value and what is allowed on one line.
"""
from __future__ import annotations

import dataclasses
import difflib
import math
import types
import typing
from typing import Any, Callable, ClassVar, Iterable

from fednlp_bench.errors import ConfigError, UserError

_NO_DEFAULT = dataclasses.MISSING


def param(
    default: Any = _NO_DEFAULT,
    *,
    default_factory: Callable[[], Any] | None = None,
    low: float | None = None,
    high: float | None = None,
    low_open: bool = False,
    high_open: bool = False,
    finite: bool = False,
    choices: Iterable[Any] | None = None,
    search: Iterable[Any] | None = None,
    interval: bool = False,
    doc: str = "",
) -> Any:
    """A dataclass field with validation rules (see the module docstring).

    ``interval=True`` states a two-sided range as ``in [low, high)`` instead of naming only the
    violated bound; ``doc`` is a one-line description shown by ``fednlp-bench list``.
    """
    meta = {"low": low, "high": high, "low_open": low_open, "high_open": high_open, "finite": finite,
            "choices": tuple(choices) if choices is not None else None,
            "search": tuple(search) if search is not None else None, "interval": interval, "doc": doc}
    if default_factory is not None:
        return dataclasses.field(default_factory=default_factory, metadata=meta)
    return dataclasses.field(default=default, metadata=meta)


def did_you_mean(word: str, options: Iterable[str], listed: str = "allowed") -> str:
    """``(allowed: a, b); did you mean 'a'?`` for error messages."""
    options = sorted(options)
    close = difflib.get_close_matches(str(word), options, n=1)
    hint = f"; did you mean '{close[0]}'?" if close else ""
    return f"({listed}: {', '.join(options) or 'none'}){hint}"


# --------------------------------------------------------------------------- one value
def _kinds(hint: Any) -> tuple[tuple[type, ...], bool]:
    """(accepted types, None allowed) of a type hint such as ``float``, ``int | None``, ``dict[str, Any]``."""
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(hint)
        kinds = tuple(k for a in args if a is not type(None) for k in _kinds(a)[0])
        return kinds, type(None) in args
    if origin is not None:
        return (origin,), False
    if hint is Any or hint is None:
        return (object,), True
    return (hint,), False


def _type_name(kinds: tuple[type, ...], optional: bool) -> str:
    return " or ".join(k.__name__ for k in kinds) + (" or null" if optional else "")


def coerce(value: Any, hint: Any) -> tuple[bool, Any]:
    """``(ok, value)``: ``value`` converted to the hinted type, or ``ok=False`` when it cannot be."""
    kinds, optional = _kinds(hint)
    if value is None:
        return optional, None
    if object in kinds:
        return True, value
    if isinstance(value, bool) or type(value).__name__ == "bool_":
        return (bool in kinds), bool(value)
    if isinstance(value, kinds):
        if float in kinds and int not in kinds and isinstance(value, int):
            return True, float(value)
        return True, value
    if float in kinds and isinstance(value, int):
        return True, float(value)
    if int in kinds and isinstance(value, float) and value.is_integer():
        return True, int(value)
    if isinstance(value, str):  # numbers and flags written as text (CLI, files)
        return _from_text(value, kinds)
    if hasattr(value, "item") and not isinstance(value, bytes):  # numpy scalars
        try:
            return coerce(value.item(), hint)
        except (TypeError, ValueError):
            return False, value
    return False, value


_TRUE, _FALSE = ("true", "yes", "1"), ("false", "no", "0")


def _from_text(text: str, kinds: tuple[type, ...]) -> tuple[bool, Any]:
    """``"1e-3"`` -> 0.001 for a float, ``"4"`` -> 4 for an int, ``"true"`` -> True for a bool."""
    low = text.strip().lower()
    if bool in kinds and low in _TRUE + _FALSE:
        return True, low in _TRUE
    try:
        number = float(text)
    except ValueError:
        return False, text
    if float in kinds:
        return True, number
    if int in kinds and number.is_integer():
        return True, int(number)
    return False, text


def _violation(value: Any, meta: dict) -> str | None:
    """The rule ``value`` breaks, as the text after "must be", or None."""
    choices = meta.get("choices")
    if choices is not None and value not in choices:
        names = [str(c) for c in choices]
        return " or ".join(names) if len(names) == 2 else "one of " + ", ".join(names)
    if not isinstance(value, (int, float)) or isinstance(value, bool):
        return None
    low, high, finite = meta.get("low"), meta.get("high"), meta.get("finite")
    nan = isinstance(value, float) and math.isnan(value)
    bad_low = low is not None and (nan or not (value > low if meta["low_open"] else value >= low))
    bad_high = high is not None and (nan or not (value < high if meta["high_open"] else value <= high))
    bad_inf = bool(finite) and not math.isfinite(value)
    if not (bad_low or bad_high or bad_inf):
        return None
    prefix = "a finite number " if finite else ""
    low_rule = f"{prefix}{'>' if meta['low_open'] else '>='} {low}" if low is not None else None
    high_rule = f"{prefix}{'<' if meta['high_open'] else '<='} {high}" if high is not None else None
    if meta.get("interval") and low is not None and high is not None:
        return f"in {'(' if meta['low_open'] else '['}{low:g}, {high:g}{')' if meta['high_open'] else ']'}"
    if bad_low or (bad_inf and value < 0 and low_rule):
        return low_rule
    return (high_rule if bad_high or high_rule else low_rule) or "a finite number"


def _assign_rule(name: str, meta: dict, broken: str) -> str:
    """Partitioner wording of a two-sided range: ``0.01 <= alpha <= 1e+06``."""
    low, high = meta.get("low"), meta.get("high")
    if low is None or high is None or meta.get("choices") is not None:
        return broken
    return (f"{low:g} {'<' if meta['low_open'] else '<='} {name} "
            f"{'<' if meta['high_open'] else '<='} {high:g}")


def check_value(label: str, value: Any, hint: Any, meta: dict | None = None, *,
                error: type[UserError] = ConfigError, style: str = "got") -> Any:
    """Coerce and check one value; returns it converted or raises ``error`` with one line."""
    meta = meta or {}
    choices = meta.get("choices")
    if choices is not None and value not in choices and value is not None:
        raise error(f"{label} must be {_violation(value, meta)}, got {value!r}" if style == "got"
                    else f"{label}={value!r} must be {_violation(value, meta)}")
    ok, value_c = coerce(value, hint)
    if not ok:
        rule = _type_name(*_kinds(hint))
        raise error(f"{label} must be {rule}, got {value!r}" if style == "got" else f"{label}={value!r} must be {rule}")
    broken = _violation(value_c, meta) if value_c is not None else None
    if broken is not None:
        if style == "got":
            raise error(f"{label} must be {broken}, got {value_c!r}")
        name = label.rpartition(" ")[2]
        raise error(f"{label}={value_c!r} is out of range; allowed: {_assign_rule(name, meta, broken)}")
    return value_c


# --------------------------------------------------------------------------- a dataclass
def _hints(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def build(cls: type, values: dict[str, Any], *, owner: str, what: str = "parameter", prefix: str = "",
          error: type[UserError] = ConfigError, style: str = "got") -> Any:
    """``cls(**values)`` with unknown names rejected (did-you-mean) and every value checked.

    ``owner``/``what`` word the unknown-name error (``algorithm 'fedprox' has no hyper-parameter
    'mu2' (allowed: mu)``); ``prefix`` is prepended to field names in value errors (``algorithm.``).
    """
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    for key in values:
        if key not in fields:
            raise error(f"{owner} has no {what} '{key}' {did_you_mean(key, fields)}")
    hints = _hints(cls)
    checked = {key: check_value(f"{prefix}{key}", v, hints[key], dict(fields[key].metadata), error=error,
                                style=style) for key, v in values.items()}
    return cls(**checked)


def _coerced_fields(instance: Any, prefix: str, error: type[UserError], style: str) -> dict[str, Any]:
    """Fields of ``instance`` whose checked value differs in type or value (e.g. ``1`` -> ``1.0``)."""
    hints = _hints(type(instance))
    changes = {}
    for f in dataclasses.fields(instance):
        if not f.init:
            continue
        value = getattr(instance, f.name)
        new = check_value(f"{prefix}{f.name}", value, hints[f.name], dict(f.metadata), error=error, style=style)
        if type(new) is not type(value) or new is not value and new != value:
            changes[f.name] = new
    return changes


def check(instance: Any, *, prefix: str = "", error: type[UserError] = ConfigError, style: str = "got") -> Any:
    """Check every field of a constructed dataclass; returns it, or a copy with coerced values."""
    changes = _coerced_fields(instance, prefix, error, style)
    return dataclasses.replace(instance, **changes) if changes else instance


def search_space(cls: type) -> dict[str, list[Any]]:
    """The tuning grid a dataclass declares: ``{field: [values...]}`` for fields with ``search``."""
    return {f.name: list(f.metadata["search"]) for f in dataclasses.fields(cls)
            if f.metadata.get("search") is not None}


def describe(cls: type) -> list[tuple[str, Any, str]]:
    """``(name, default, rule/doc)`` per field, for listings and docs."""
    out = []
    for f in dataclasses.fields(cls):
        default = f.default if f.default is not dataclasses.MISSING else (
            f.default_factory() if f.default_factory is not dataclasses.MISSING else None)
        out.append((f.name, default, f.metadata.get("doc", "")))
    return out


class Checked:
    """Mixin for parameter dataclasses: constructing one directly checks its declared rules too.

    Subclasses may set ``_error`` (the exception type) and ``_prefix`` (label prefix). Cross-field
    rules go in a ``__post_init__`` that calls ``super().__post_init__()`` first.
    """

    _error: ClassVar[type[UserError]] = ConfigError
    _prefix: ClassVar[str] = ""
    _style: ClassVar[str] = "got"

    def __post_init__(self) -> None:
        for name, value in _coerced_fields(self, self._prefix, self._error, self._style).items():
            object.__setattr__(self, name, value)  # frozen dataclasses too
