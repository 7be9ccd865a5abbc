"""Aggregators: the robust ones against scipy/numpy, and through the real engine."""
from __future__ import annotations

import numpy as np
import pytest
import scipy.stats
import torch

from fednlp_bench import config
from fednlp_bench.aggregation import CoordinateMedian, TrimmedMean, WeightedMean, make_aggregator
from fednlp_bench.algorithms import Algorithm
from fednlp_bench.algorithms.harness import tiny_simulator
from fednlp_bench.client_runner import ClientUpdate
from fednlp_bench.world import World


def aggregate(agg, rows: np.ndarray, weights=None) -> tuple[np.ndarray, float | None]:
    agg.start(torch.zeros(rows.shape[1]), len(rows))
    for slot, row in enumerate(rows):
        agg.add(ClientUpdate(torch.tensor(row, dtype=torch.float32)), 1.0 if weights is None else weights[slot], slot)
    out, denominator = agg.reduce(World())
    return out.numpy(), denominator


@pytest.mark.parametrize("n, beta", [(7, 0.2), (8, 0.25), (5, 0.0), (9, 0.45), (3, 0.34)])
def test_trimmed_mean_matches_scipy(n, beta):
    rows = np.random.default_rng(n).normal(size=(n, 13)).astype(np.float32)
    out, denominator = aggregate(TrimmedMean(beta), rows)
    assert denominator == 1.0
    np.testing.assert_allclose(out, scipy.stats.trim_mean(rows, beta, axis=0), rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("n", [1, 4, 7])
def test_median_matches_numpy(n):
    rows = np.random.default_rng(10 + n).normal(size=(n, 11)).astype(np.float32)
    out, _ = aggregate(CoordinateMedian(), rows)
    np.testing.assert_allclose(out, np.median(rows, axis=0), rtol=1e-6, atol=1e-7)


def test_hand_computed_trimmed_mean_and_weighted_sum():
    rows = np.array([[1.0, 10.0], [2.0, -50.0], [100.0, 20.0], [3.0, 30.0], [4.0, 40.0]], dtype=np.float32)
    out, _ = aggregate(TrimmedMean(0.2), rows)  # drop one value at each end per coordinate
    np.testing.assert_allclose(out, [(2 + 3 + 4) / 3, (10 + 20 + 30) / 3], rtol=1e-6)
    total, denominator = aggregate(WeightedMean(), rows[:2], weights=[1.0, 3.0])
    assert denominator is None  # the engine divides by the total weight
    np.testing.assert_allclose(total, [1 + 6, 10 - 150])


class Poisoned(Algorithm):
    """Client 0 sends a huge update (a Byzantine client); the others train normally."""

    name = "poisoned"

    def client_update(self, ctx):
        result = super().client_update(ctx)
        if ctx.client_id == 0:
            ctx.params.add_(1e4)
        return result

    def server_update(self, global_params, agg):
        self.seen = agg.mean_delta.clone()
        super().server_update(global_params, agg)


@pytest.mark.parametrize("aggregator, bounded", [("mean", False), ("median", True), ("trimmed_mean", True)])
def test_engine_aggregates_with_the_configured_rule(aggregator, bounded):
    alg = Poisoned()
    sim = tiny_simulator(alg, n_clients=5, clients_per_round=5, local_steps=2, rounds=1, aggregator=aggregator,
                         trim_fraction=0.2)
    assert sim.row_sparse is None
    sim.start_server()
    sim.run_round(1)
    worst = float(alg.seen.abs().max())
    # the mean carries 1e4 * 16/80 of the poison; median and trimmed mean drop it entirely
    assert (worst < 1.0) is bounded, worst


def test_aggregator_is_selected_and_validated_by_config(tiny_overrides):
    cfg = config.resolve("tc", "smoke", tiny_overrides("fl.aggregator=trimmed_mean", "fl.trim_fraction=0.25"))
    assert isinstance(make_aggregator(cfg.fl.aggregator, cfg.fl.trim_fraction), TrimmedMean)
    with pytest.raises(config.ConfigError, match="fl.aggregator must be one of mean, trimmed_mean, median"):
        config.resolve("tc", "smoke", tiny_overrides("fl.aggregator=krum"))
    with pytest.raises(config.ConfigError, match=r"fl.trim_fraction must be in \[0, 0.5\)"):
        config.resolve("tc", "smoke", tiny_overrides("fl.trim_fraction=0.5"))
