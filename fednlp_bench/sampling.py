"""Client samplers: which clients take part in a round, and which of them drop out.

* ``uniform`` - k clients uniformly without replacement (McMahan et al. 2017).
* ``activity`` - k clients without replacement, probability proportional to the
  client's number of available samples (device selection by activity). Draws
  are successive (numpy's weighted choice without replacement): the first pick
  is exactly proportional to size, later picks renormalise over the rest.

A sampler is a callable ``(round, sizes, k, rng) -> np.ndarray`` of distinct
client ids, where ``sizes[i]`` is the number of rows client ``i`` holds in this
round (0 = not available; the continual setting changes sizes over rounds).
Add one with :func:`register` in code, or from a package through the
entry-point group ``fednlp_bench.samplers`` (``name = module:function``); then
``--set fl.sampler=<name>``. The engine derives ``rng`` from (seed, round)
(:func:`round_rng`), so the cohort does not depend on the number of ranks or
on earlier rounds.

Dropout: :func:`drop_out` removes a fixed fraction of the sampled cohort (the
clients that fail to report), with its own (seed, round) RNG.
"""
from __future__ import annotations

import difflib
from importlib.metadata import entry_points
from typing import Callable

import numpy as np

from fednlp_bench.errors import SamplerError  # noqa: F401 - re-exported

Sampler = Callable[[int, np.ndarray, int, np.random.Generator], np.ndarray]
ENTRY_POINT_GROUP = "fednlp_bench.samplers"
_SAMPLERS: dict[str, Sampler] = {}


def register(name: str) -> Callable[[Sampler], Sampler]:
    """Decorator: ``@register("mine") def mine(round, sizes, k, rng) -> np.ndarray``."""

    def deco(fn: Sampler) -> Sampler:
        if name in _SAMPLERS and _SAMPLERS[name] is not fn:
            raise SamplerError(f"client sampler '{name}' is already registered")
        _SAMPLERS[name] = fn
        return fn

    return deco


@register("uniform")
def uniform(round: int, sizes: np.ndarray, k: int, rng: np.random.Generator) -> np.ndarray:
    eligible = np.flatnonzero(sizes > 0)
    return np.sort(rng.choice(eligible, size=min(k, len(eligible)), replace=False))


@register("activity")
def activity(round: int, sizes: np.ndarray, k: int, rng: np.random.Generator) -> np.ndarray:
    eligible = np.flatnonzero(sizes > 0)
    if len(eligible) == 0:
        return eligible
    p = sizes[eligible] / sizes[eligible].sum()
    return np.sort(rng.choice(eligible, size=min(k, len(eligible)), replace=False, p=p))


def _plugins() -> dict[str, str]:
    return {ep.name: ep.value for ep in entry_points(group=ENTRY_POINT_GROUP) if ep.name not in _SAMPLERS}


def available() -> list[str]:
    return sorted({*_SAMPLERS, *_plugins()})


def get(name: str) -> Sampler:
    if name in _SAMPLERS:
        return _SAMPLERS[name]
    for ep in entry_points(group=ENTRY_POINT_GROUP):
        if ep.name == name:
            try:
                fn = ep.load()
            except Exception as exc:  # a plugin may raise anything at import time
                raise SamplerError(f"client sampler plugin '{name}' ({ep.value}) cannot be loaded "
                                   f"({exc.__class__.__name__}: {exc})") from None
            if not callable(fn):
                raise SamplerError(f"client sampler plugin '{name}' ({ep.value}) is not callable")
            return fn
    close = difflib.get_close_matches(name, available(), n=1)
    hint = f"; did you mean '{close[0]}'?" if close else ""
    raise SamplerError(f"unknown client sampler '{name}' (available: {', '.join(available())}){hint}")


def sample(name: str, round: int, sizes: np.ndarray, k: int, rng: np.random.Generator) -> np.ndarray:
    """Run sampler ``name`` and check its answer: distinct, in range, available clients."""
    cohort = np.asarray(get(name)(round, sizes, k, rng))
    if cohort.ndim != 1 or (cohort.size and not np.issubdtype(cohort.dtype, np.integer)):
        raise SamplerError(f"client sampler '{name}' must return a 1-d array of client ids, got {cohort!r}")
    if cohort.size and (cohort.min() < 0 or cohort.max() >= len(sizes)):
        raise SamplerError(f"client sampler '{name}' returned ids outside 0..{len(sizes) - 1}")
    if len(np.unique(cohort)) != len(cohort):
        raise SamplerError(f"client sampler '{name}' returned a client twice")
    if len(cohort) > k:
        raise SamplerError(f"client sampler '{name}' returned {len(cohort)} clients, asked for {k}")
    return cohort.astype(np.int64)


def drop_out(cohort: np.ndarray, fraction: float, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Split ``cohort`` into (reporting, dropped): ``round(fraction * len)`` clients fail, at least one reports."""
    n_drop = min(int(round(fraction * len(cohort))), max(len(cohort) - 1, 0))
    if n_drop == 0:
        return cohort, cohort[:0]
    mask = np.zeros(len(cohort), dtype=bool)
    mask[rng.choice(len(cohort), size=n_drop, replace=False)] = True
    return cohort[~mask], cohort[mask]


def round_rng(seed: int, round: int) -> np.random.Generator:
    """The cohort RNG of a round, independent of ranks and of earlier rounds' draws."""
    return np.random.default_rng([seed, round, 0x5A17])


def dropout_rng(seed: int, round: int) -> np.random.Generator:
    """The dropout RNG of a round (separate from the cohort's, so dropout does not change who is sampled)."""
    return np.random.default_rng([seed, round, 0xD209])
