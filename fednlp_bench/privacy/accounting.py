"""Privacy accounting with Google's ``dp-accounting`` (RDP and PLD).

A run's mechanism is ``steps`` compositions of a subsampled Gaussian with
noise multiplier ``sigma`` and sampling rate ``q``:

* user level (DP-FedAvg, McMahan et al. 2018): one step per round, ``q`` =
  clients per round / number of clients;
* sample level (DP-SGD, Abadi et al. 2016): one step per local batch, ``q`` =
  batch size / client size.

Sampling assumption. The engine draws a *fixed-size* cohort without
replacement each round, and clients read *shuffled fixed-size* batches. The
tight accountants (PLD, and RDP with add/remove neighbours) are for *Poisson*
sampling, so ``sampling="poisson"`` is an approximation of what the engine
does (the usual practice, e.g. Abadi et al. 2016, Opacus). For user level,
``sampling="fixed_size"`` is the exact analysis of sampling without
replacement (Wang, Balle & Kasiviswanathan 2019, RDP only) under
replace-one neighbours; replacing a client moves the clipped sum by up to
``2C``, so it is accounted with noise multiplier ``sigma / 2``. Every result
says which assumption it used.

Delta. A mechanism that publishes one random record in full is
``(0, 1/N)``-DP, so a delta near ``1/N`` makes epsilon meaningless; the usual
advice is delta well below ``1/N`` (Dwork & Roth 2014, sec. 2.3; Ponomareva
et al. 2023, "How to DP-fy ML", sec. 5.2). :func:`default_delta` is
``min(1e-5, N^-1.1)``, used when a run does not set delta.

Rounds with different rates. :func:`epsilon_of_rounds` composes rounds whose
sampling rate (or population) differs, e.g. when only the clients that hold
data can be sampled and that number changes over rounds.
"""
from __future__ import annotations

import logging
import math
from dataclasses import asdict, dataclass

ACCOUNTANTS = ("rdp", "pld")
SAMPLINGS = ("poisson", "fixed_size")


class AccountingError(ValueError):
    """Parameters for which no guarantee can be computed."""


def default_delta(n: int) -> float:
    """``min(1e-5, n^-1.1)`` for a population of ``n`` protected units (clients or examples)."""
    return min(1e-5, max(int(n), 2) ** -1.1)


@dataclass(frozen=True)
class Guarantee:
    """(epsilon, delta) of ``steps`` compositions of a subsampled Gaussian."""

    epsilon: float
    delta: float
    noise_multiplier: float
    sampling_rate: float
    steps: int
    accountant: str
    sampling: str
    neighbouring: str

    def to_dict(self) -> dict:
        out = asdict(self)
        if not math.isfinite(self.epsilon):
            out["epsilon"] = None  # JSON has no inf
        return out


def _one_step(sigma: float, q: float, sampling: str, population: int | None):
    """One subsampled Gaussian step (replace-one with sigma / 2 for sampling without replacement)."""
    from dp_accounting import dp_event

    if sampling == "poisson":
        return dp_event.PoissonSampledDpEvent(q, dp_event.GaussianDpEvent(sigma))
    if sampling == "fixed_size":
        if population is None:
            raise AccountingError("fixed_size sampling needs the population size")
        sample = int(round(q * population))
        return dp_event.SampledWithoutReplacementDpEvent(population, sample, dp_event.GaussianDpEvent(sigma / 2))
    raise AccountingError(f"sampling must be one of {', '.join(SAMPLINGS)}, got {sampling!r}")


def _event(sigma: float, rounds: list[tuple[float, int | None]], sampling: str):
    """The composition of ``rounds`` steps, each (rate, population); equal steps are self-composed."""
    from collections import Counter

    from dp_accounting import dp_event

    groups = Counter(rounds)
    parts = [dp_event.SelfComposedDpEvent(_one_step(sigma, q, sampling, pop), k) for (q, pop), k in groups.items()]
    return parts[0] if len(parts) == 1 else dp_event.ComposedDpEvent(parts)


def _accountant(name: str, sampling: str):
    from dp_accounting import NeighboringRelation
    from dp_accounting.pld import pld_privacy_accountant
    from dp_accounting.rdp import rdp_privacy_accountant

    if name == "rdp":
        relation = NeighboringRelation.REPLACE_ONE if sampling == "fixed_size" else NeighboringRelation.ADD_OR_REMOVE_ONE
        return rdp_privacy_accountant.RdpAccountant(neighboring_relation=relation)
    if name == "pld":
        if sampling != "poisson":
            raise AccountingError("the PLD accountant handles Poisson sampling only; use accountant 'rdp'")
        # pessimistic discretisation: still an upper bound; 1e-3 is ~10x faster than the 1e-4 default
        return pld_privacy_accountant.PLDAccountant(value_discretization_interval=1e-3)
    raise AccountingError(f"accountant must be one of {', '.join(ACCOUNTANTS)}, got {name!r}")


def epsilon(
    noise_multiplier: float,
    sampling_rate: float,
    steps: int,
    delta: float,
    accountant: str = "rdp",
    sampling: str = "poisson",
    population: int | None = None,
) -> Guarantee:
    """Epsilon at ``delta`` after ``steps`` subsampled-Gaussian steps (inf if there is no noise)."""
    if not 0 < sampling_rate <= 1:
        raise AccountingError(f"sampling rate must be in (0, 1], got {sampling_rate}")
    return epsilon_of_rounds(noise_multiplier, [(sampling_rate, population)] * int(steps), delta, accountant,
                             sampling)


def epsilon_of_rounds(
    noise_multiplier: float,
    rounds: list[tuple[float, int | None]],
    delta: float,
    accountant: str = "rdp",
    sampling: str = "poisson",
) -> Guarantee:
    """Epsilon at ``delta`` of one subsampled-Gaussian step per entry of ``rounds`` = [(rate, population)].

    The returned :class:`Guarantee` names the largest rate and the number of steps.
    """
    rounds = [(float(q), None if pop is None else int(pop)) for q, pop in rounds]
    for q, _ in rounds:
        if not 0 < q <= 1:
            raise AccountingError(f"sampling rate must be in (0, 1], got {q}")
    if not 0 < delta < 1:
        raise AccountingError(f"delta must be in (0, 1), got {delta}")
    relation = "replace_one" if sampling == "fixed_size" else "add_or_remove_one"
    steps = len(rounds)
    if noise_multiplier <= 0 or steps <= 0:
        eps = math.inf if noise_multiplier <= 0 and steps > 0 else 0.0
    else:
        acc = _accountant(accountant, sampling)
        absl = logging.getLogger("absl")
        level = absl.level
        absl.setLevel(logging.ERROR)  # RDP warns about the small orders it drops
        try:
            acc.compose(_event(noise_multiplier, rounds, sampling))
            eps = float(acc.get_epsilon(delta))
        finally:
            absl.setLevel(level)
    top = max((q for q, _ in rounds), default=0.0)
    return Guarantee(eps, delta, noise_multiplier, top, steps, accountant, sampling, relation)


def noise_for_epsilon(
    target_epsilon: float,
    sampling_rate: float,
    steps: int,
    delta: float,
    accountant: str = "rdp",
    sampling: str = "poisson",
    population: int | None = None,
    tolerance: float = 1e-3,
) -> float:
    """Smallest noise multiplier whose guarantee is at most ``target_epsilon`` (bisection)."""
    if target_epsilon <= 0:
        raise AccountingError(f"target epsilon must be > 0, got {target_epsilon}")

    def eps(sigma: float) -> float:
        return epsilon(sigma, sampling_rate, steps, delta, accountant, sampling, population).epsilon

    lo, hi = 0.0, 1.0
    while eps(hi) > target_epsilon:
        lo, hi = hi, hi * 2
        if hi > 1e4:
            raise AccountingError(f"no noise multiplier <= 1e4 reaches epsilon {target_epsilon}")
    while hi - lo > tolerance * hi:
        mid = (lo + hi) / 2
        if eps(mid) > target_epsilon:
            lo = mid
        else:
            hi = mid
    return hi
