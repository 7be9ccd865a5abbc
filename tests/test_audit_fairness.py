"""Per-client fairness summary."""
from __future__ import annotations

import math

import pytest

from fednlp_bench.audit.fairness import client_fairness, fairness


def test_equal_clients_are_perfectly_fair():
    f = fairness([0.8] * 5)
    assert f["gini"] == pytest.approx(0.0) and f["std"] == pytest.approx(0.0)
    assert f["worst10"] == f["best10"] == pytest.approx(0.8)


def test_known_values():
    f = fairness([0, 0, 0, 1])
    assert f["gini"] == pytest.approx(0.75)  # (n - 1) / n: one client has everything
    assert f["mean"] == 0.25 and f["std"] == pytest.approx(math.sqrt(0.1875))
    vals = list(range(20))
    g = fairness(vals)
    assert g["worst10"] == 0.5 and g["best10"] == 18.5  # ceil(0.1 * 20) = 2 clients
    assert g["min"] == 0 and g["max"] == 19 and g["n_clients"] == 20


def test_missing_values_are_ignored():
    f = client_fairness({"0": {"accuracy": 0.5}, "1": {"accuracy": float("nan")}, "2": {"f1": 1.0},
                         "3": {"accuracy": 1.0}}, "accuracy")
    assert f["n_clients"] == 2 and f["mean"] == 0.75 and f["metric"] == "accuracy"
    empty = fairness([])
    assert empty["n_clients"] == 0 and empty["mean"] is None
    assert fairness([-1.0, 1.0])["gini"] is None  # undefined for negative scores
