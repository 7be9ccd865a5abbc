"""Statistics of the leaderboard: confidence intervals over seeds, paired differences, tie-aware ranks.

All intervals are two-sided 95% intervals from Student's t distribution (``CONFIDENCE``):

- a row's mean over ``n`` seeds: ``mean ± t(0.975, n-1) * s / sqrt(n)`` with the sample standard
  deviation ``s`` (ddof 1); no interval with one seed;
- the difference of two rows (:func:`compare`): **paired by seed** when they share at least two
  seeds (``d_i = a_i - b_i`` over the shared seeds, then the interval of the mean of ``d``, as in
  Dror et al. 2018, "The Hitchhiker's Guide to Testing Statistical Significance in NLP"); otherwise
  Welch's unequal-variance interval when both rows have two or more seeds; otherwise only the
  difference of the means, without an interval;
- a difference is *significant* when its interval excludes 0.

Ranks (:func:`tie_aware_ranks`): the rank of a row is one plus the number of rows that are
significantly better than it. Rows that no other row beats significantly share rank 1, so
differences the seed-to-seed noise can explain never separate ranks; a single seed never
ranks anything above anything else (no interval can be computed).

Time to accuracy (:func:`rounds_to_target`, FedScale, Lai et al. 2022): the first evaluated round
whose metric reaches the target.
"""
from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import lru_cache

CONFIDENCE = 0.95


@lru_cache(maxsize=256)
def t_quantile(df: float, confidence: float = CONFIDENCE) -> float:
    """Two-sided Student t critical value: ``t`` with ``P(|T_df| <= t) = confidence``."""
    if not df > 0:
        raise ValueError(f"degrees of freedom must be > 0, got {df}")
    from scipy.stats import t  # scikit-learn depends on scipy, so it is always installed

    return float(t.ppf(0.5 + confidence / 2, df))


def _mean(values: Sequence[float]) -> float:
    return math.fsum(values) / len(values)


def _sample_var(values: Sequence[float]) -> float:
    m = _mean(values)
    return math.fsum((v - m) ** 2 for v in values) / (len(values) - 1)


@dataclass(frozen=True)
class Estimate:
    """Mean over seeds with the half-width of its 95% interval (None with fewer than two seeds)."""

    mean: float | None
    half: float | None
    n: int
    std: float | None = None


def mean_ci(values: Sequence[float]) -> Estimate:
    """Mean, t interval half-width and sample std of ``values``."""
    vals = [float(v) for v in values]
    if not vals:
        return Estimate(None, None, 0)
    if len(vals) == 1:
        return Estimate(vals[0], None, 1)
    std = math.sqrt(_sample_var(vals))
    return Estimate(_mean(vals), t_quantile(len(vals) - 1) * std / math.sqrt(len(vals)), len(vals), std)


@dataclass(frozen=True)
class Diff:
    """``a - b`` with the half-width of its 95% interval and how it was computed."""

    mean: float
    half: float | None
    n: int  # pairs (paired) or the smaller sample size (welch, means)
    method: str  # "paired", "welch" or "means" (no interval)

    @property
    def significant(self) -> bool:
        """The interval excludes 0."""
        return self.half is not None and abs(self.mean) > self.half

    @property
    def low(self) -> float | None:
        return None if self.half is None else self.mean - self.half

    @property
    def high(self) -> float | None:
        return None if self.half is None else self.mean + self.half


def welch(a: Sequence[float], b: Sequence[float]) -> Diff:
    """Welch's interval for ``mean(a) - mean(b)`` (Welch-Satterthwaite degrees of freedom)."""
    va, vb = _sample_var(a) / len(a), _sample_var(b) / len(b)
    diff = _mean(a) - _mean(b)
    se2 = va + vb
    if se2 == 0:
        return Diff(diff, 0.0, min(len(a), len(b)), "welch")
    df = se2**2 / (va**2 / (len(a) - 1) + vb**2 / (len(b) - 1))
    return Diff(diff, t_quantile(df) * math.sqrt(se2), min(len(a), len(b)), "welch")


def compare(a: Mapping[int, float], b: Mapping[int, float]) -> Diff | None:
    """``a - b`` for two rows given as ``{seed: value}``; None when either row is empty."""
    if not a or not b:
        return None
    shared = sorted(set(a) & set(b))
    if len(shared) >= 2:
        d = [a[s] - b[s] for s in shared]
        est = mean_ci(d)
        return Diff(est.mean, est.half, len(d), "paired")  # type: ignore[arg-type]
    if len(a) >= 2 and len(b) >= 2:
        return welch(list(a.values()), list(b.values()))
    return Diff(_mean(list(a.values())) - _mean(list(b.values())), None, min(len(a), len(b)), "means")


def tie_aware_ranks(rows: Sequence[Mapping[int, float]]) -> list[int]:
    """Rank of each row (higher values are better): 1 + the number of rows significantly better."""
    ranks = []
    for i, row in enumerate(rows):
        better = 0
        for j, other in enumerate(rows):
            if i != j:
                d = compare(other, row)
                if d is not None and d.significant and d.mean > 0:
                    better += 1
        ranks.append(1 + better)
    return ranks


def rounds_to_target(curve: Sequence[tuple[int, float]], target: float) -> int | None:
    """First round (in round order) whose value is at least ``target``; None if never reached.

    "At least" allows for float rounding (1e-9 relative): 0.72 reaches 0.9 * 0.8 = 0.7200000000000001.
    """
    for rnd, value in sorted(curve):
        if value >= target - 1e-9 * abs(target):
            return rnd
    return None
