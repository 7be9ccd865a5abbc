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

from typing import Callable

import numpy as np

from fednlp_bench.errors import SamplerError
from fednlp_bench.registry import Registry
from fednlp_bench.state import Cohort

Sampler = Callable[[int, np.ndarray, int, np.random.Generator], np.ndarray]
ENTRY_POINT_GROUP = "fednlp_bench.samplers"


def _check_sampler(obj: object, label: str) -> Sampler:
    if not callable(obj):
        raise SamplerError(f"{label}: {obj!r} is not callable")
    return obj


SAMPLERS: Registry[Sampler] = Registry("client sampler", SamplerError, ENTRY_POINT_GROUP, _check_sampler)


def register(name: str) -> Callable[[Sampler], Sampler]:
    """Decorator: ``@register("mine") def mine(round, sizes, k, rng) -> np.ndarray``."""
    return SAMPLERS.register(name)


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


def available() -> list[str]:
    return SAMPLERS.names()


def get(name: str) -> Sampler:
    return SAMPLERS.get(name)


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


class CohortSchedule:
    """Each round's cohort: the sampler's draw from (seed, round), then dropout; a pure function.

    The engine draws each round once and records it in its training state; :meth:`plan`
    looks ahead (which client will be sampled most) without running anything.
    """

    def __init__(self, sampler: str, clients_per_round: int, seed: int, dropout: float = 0.0) -> None:
        self.sampler, self.k, self.seed, self.dropout = sampler, clients_per_round, seed, dropout

    def draw(self, round: int, sizes: np.ndarray) -> Cohort:
        sampled = sample(self.sampler, round, sizes, self.k, round_rng(self.seed, round))
        _, dropped = drop_out(sampled, self.dropout, dropout_rng(self.seed, round))
        return Cohort(round, sampled.tolist(), dropped.tolist(), eligible=int((np.asarray(sizes) > 0).sum()))

    def plan(self, rounds: int, sizes: np.ndarray) -> np.ndarray:
        """Rounds each client would be sampled in over ``rounds`` rounds with fixed ``sizes``."""
        counts = np.zeros(len(sizes), dtype=np.int64)
        for r in range(1, rounds + 1):
            counts[sample(self.sampler, r, sizes, self.k, round_rng(self.seed, r))] += 1
        return counts


def round_rng(seed: int, round: int) -> np.random.Generator:
    """The cohort RNG of a round, independent of ranks and of earlier rounds' draws."""
    return np.random.default_rng([seed, round, 0x5A17])


def dropout_rng(seed: int, round: int) -> np.random.Generator:
    """The dropout RNG of a round (separate from the cohort's, so dropout does not change who is sampled)."""
    return np.random.default_rng([seed, round, 0xD209])
