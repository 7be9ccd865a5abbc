"""Fairness across clients: the distribution of a per-client metric.

Federated fairness is usually read off the per-client accuracy distribution
(Li, Sanjabi, Beirami & Smith 2020, "Fair Resource Allocation in Federated
Learning", q-FFL: variance and worst clients): mean, population std, mean of
the worst and best 10% of clients, and the Gini coefficient (0 = every client
scores the same). The worst/best-10% convention matches the leaderboard
(``ceil(0.1 n)`` clients, at least one).
"""
from __future__ import annotations

import math
from typing import Any, Mapping

import numpy as np


def fairness(values: Any) -> dict[str, float | int | None]:
    """Summary of per-client scores (higher = better); NaN/None entries are ignored."""
    v = np.asarray([x for x in np.asarray(values, dtype=np.float64).ravel() if math.isfinite(x)])
    n = len(v)
    if n == 0:
        return {"n_clients": 0, "mean": None, "std": None, "min": None, "max": None,
                "worst10": None, "best10": None, "gini": None}
    v = np.sort(v)
    k = max(1, math.ceil(0.1 * n))
    total = float(v.sum())
    # Gini = sum_i (2i - n - 1) v_(i) / (n sum v) for sorted non-negative values
    gini = float(((2 * np.arange(1, n + 1) - n - 1) * v).sum() / (n * total)) if total > 0 and v[0] >= 0 else None
    return {
        "n_clients": n,
        "mean": float(v.mean()),
        "std": float(v.std()),
        "min": float(v[0]),
        "max": float(v[-1]),
        "worst10": float(v[:k].mean()),
        "best10": float(v[-k:].mean()),
        "gini": gini,
    }


def client_fairness(per_client: Mapping[str, Mapping[str, Any]], metric: str) -> dict[str, float | int | None]:
    """:func:`fairness` of ``metric`` over a record's ``metrics.per_client``."""
    vals = []
    for row in per_client.values():
        x = row.get(metric) if isinstance(row, Mapping) else None
        if isinstance(x, (int, float)) and not isinstance(x, bool):
            vals.append(float(x))
    out = fairness(vals)
    out["metric"] = metric
    return out
