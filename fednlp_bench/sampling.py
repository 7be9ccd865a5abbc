"""Client samplers: which clients take part in a round.

* ``uniform`` - k clients uniformly without replacement (McMahan et al. 2017).
* ``activity`` - k clients without replacement, probability proportional to the
  client's number of available samples (device selection by activity).

A sampler is a callable ``(round, sizes, k, rng) -> np.ndarray`` of client ids;
:func:`register` adds one. The engine derives ``rng`` from (seed, round) so the
cohort does not depend on the number of ranks.
"""
from __future__ import annotations

import difflib
from typing import Callable

import numpy as np

Sampler = Callable[[int, np.ndarray, int, np.random.Generator], np.ndarray]
_SAMPLERS: dict[str, Sampler] = {}


class SamplerError(ValueError):
    pass


def register(name: str) -> Callable[[Sampler], Sampler]:
    def deco(fn: Sampler) -> Sampler:
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
    p = sizes[eligible] / sizes[eligible].sum()
    return np.sort(rng.choice(eligible, size=min(k, len(eligible)), replace=False, p=p))


def available() -> list[str]:
    return sorted(_SAMPLERS)


def get(name: str) -> Sampler:
    if name not in _SAMPLERS:
        close = difflib.get_close_matches(name, list(_SAMPLERS), n=1)
        hint = f"; did you mean '{close[0]}'?" if close else ""
        raise SamplerError(f"unknown client sampler '{name}' (available: {', '.join(available())}){hint}")
    return _SAMPLERS[name]


def round_rng(seed: int, round: int) -> np.random.Generator:
    """The cohort RNG of a round, independent of ranks and of earlier rounds' draws."""
    return np.random.default_rng([seed, round, 0x5A17])
