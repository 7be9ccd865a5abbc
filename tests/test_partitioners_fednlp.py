"""dirichlet_label follows FedNLP's label-skew allocation statistically.

The reference below is a direct, row-by-row re-implementation of the procedure of FedNLP's
``data/advanced_partition/niid_label.py`` (Lin et al. 2022), written from its description:
shuffle the rows of every label; serve clients one after the other, each with a fresh draw
``q ~ Dir(alpha p)``; walk the labels in order, asking ``round(q_c * size)`` rows of label ``c``
(capped at the room left; the last label takes the room left); when a label has fewer rows left
than asked, take them all and fill the shortfall from the other labels, each giving
``ceil(remaining_c / total_remaining * shortfall)`` rows, smallest first, until the shortfall is
covered. Both implementations are compared on the total variation of each client's label
distribution to the prior and on the number of classes per client, averaged over clients and
seeds, for alpha from 0.01 to 100 (20 classes, 100 clients).
"""
from __future__ import annotations

import math

import numpy as np
import pytest

from fednlp_bench import partitioners
from fednlp_bench.partitioners import dirichlet_label

N_CLASSES, N_CLIENTS, N_ROWS = 20, 100, 6000
SEEDS = range(6)


def labels_with_uneven_prior(seed: int = 0) -> np.ndarray:
    """6,000 rows over 20 classes with a skewed prior (largest class ~6x the smallest)."""
    rng = np.random.default_rng(seed)
    weights = np.linspace(1.0, 6.0, N_CLASSES)
    return rng.choice(N_CLASSES, size=N_ROWS, p=weights / weights.sum())


def reference_fednlp(labels: np.ndarray, n_clients: int, alpha: float, rng: np.random.Generator,
                     draws: np.ndarray | None = None) -> list[list[int]]:
    """FedNLP's label-skew procedure, one row index at a time (see the module doc); ``draws``
    (n_clients x classes) replaces the Dirichlet draws when given."""
    classes = list(range(int(labels.max()) + 1))
    pools = []
    for c in classes:
        rows = list(np.flatnonzero(labels == c))
        rng.shuffle(rows)
        pools.append(rows)
    used = [0] * len(classes)
    prior = np.array([len(p) for p in pools]) / len(labels)
    size = len(labels) // n_clients  # N_ROWS is a multiple of n_clients: every client the same size
    clients = []
    for k in range(n_clients):
        q = rng.dirichlet(alpha * prior) if draws is None else draws[k]
        while np.isnan(q).any():
            q = rng.dirichlet(alpha * prior)
        mine: list[int] = []
        room = size
        for c in classes:
            ask = round(float(q[c]) * size)
            if ask >= room:
                ask, room = room, 0
            else:
                if c == classes[-1]:
                    ask = room
                room -= ask
            have = len(pools[c]) - used[c]
            if ask <= have:
                mine += pools[c][used[c] : used[c] + ask]
                used[c] += ask
                continue
            mine += pools[c][used[c] :]
            used[c] = len(pools[c])
            short = ask - have
            remaining = {d: len(pools[d]) - used[d] for d in classes if d != c}
            total = sum(remaining.values())
            for d in sorted(remaining, key=lambda d: remaining[d]):  # stable: ties in label order
                if short <= 0 or total == 0:
                    break
                take = min(math.ceil(remaining[d] / total * (ask - have)), remaining[d], short)
                mine += pools[d][used[d] : used[d] + take]
                used[d] += take
                short -= take
        clients.append(mine)
    return clients


def statistics(counts: np.ndarray, prior: np.ndarray) -> tuple[float, float]:
    """(mean total variation to the prior, mean number of classes) over clients."""
    shares = counts / counts.sum(axis=1, keepdims=True)
    return float(0.5 * np.abs(shares - prior).sum(axis=1).mean()), float((counts > 0).sum(axis=1).mean())


def counts_of(parts: list, labels: np.ndarray) -> np.ndarray:
    return np.stack([np.bincount(labels[np.asarray(p, dtype=np.int64)], minlength=N_CLASSES) for p in parts])


@pytest.mark.parametrize("alpha", [0.01, 0.1, 1.0, 10.0, 100.0])
def test_dirichlet_label_matches_fednlp_statistics(alpha):
    labels = labels_with_uneven_prior()
    prior = np.bincount(labels, minlength=N_CLASSES) / len(labels)
    ours, ref = [], []
    for seed in SEEDS:
        ref_parts = reference_fednlp(labels, N_CLIENTS, alpha, np.random.default_rng([seed, 1]))
        assert sorted(i for p in ref_parts for i in p) == list(range(N_ROWS))  # the reference covers every row
        ref.append(statistics(counts_of(ref_parts, labels), prior))
        parts = partitioners.make("dirichlet_label", N_CLIENTS, seed, alpha=alpha).split(labels=labels)
        ours.append(statistics(counts_of(parts, labels), prior))
    ours_a, ref_a = np.array(ours), np.array(ref)
    # seed-to-seed spread of each mean: the two agree within a few standard errors of their difference
    se = np.sqrt(ours_a.var(axis=0, ddof=1) / len(SEEDS) + ref_a.var(axis=0, ddof=1) / len(SEEDS))
    gap = np.abs(ours_a.mean(axis=0) - ref_a.mean(axis=0))
    assert np.all(gap <= 4 * se + np.array([0.01, 0.1])), (alpha, ours_a.mean(axis=0), ref_a.mean(axis=0), se)


@pytest.mark.parametrize("alpha", [0.01, 0.3, 5.0])
def test_same_draws_give_fednlps_counts_exactly(alpha):
    """Given the same Dirichlet draws, the vectorised allocation gives every client exactly the
    per-class counts of the row-by-row reference."""
    labels = labels_with_uneven_prior(1)
    class_sizes = np.bincount(labels, minlength=N_CLASSES)
    draws = np.random.default_rng(9).dirichlet(alpha * class_sizes / len(labels), size=N_CLIENTS)
    ref = counts_of(reference_fednlp(labels, N_CLIENTS, alpha, np.random.default_rng(0), draws), labels)
    ours = dirichlet_label.sequential_counts(draws, np.full(N_CLIENTS, N_ROWS // N_CLIENTS), class_sizes)
    assert np.array_equal(ours, ref)


def test_rationed_allocation_is_kept_as_an_option_and_is_more_skewed():
    """The previous allocation (``allocation=rationed``) stays available; at small alpha it gives
    clients fewer classes than FedNLP's procedure (the reason the default changed)."""
    labels = labels_with_uneven_prior()
    prior = np.bincount(labels, minlength=N_CLASSES) / len(labels)
    fednlp = [statistics(counts_of(partitioners.make("dirichlet_label", N_CLIENTS, s, alpha=0.01).split(
        labels=labels), labels), prior)[1] for s in SEEDS]
    rationed = [statistics(counts_of(partitioners.make("dirichlet_label", N_CLIENTS, s, alpha=0.01,
                                                       allocation="rationed").split(labels=labels), labels), prior)[1]
                for s in SEEDS]
    assert np.mean(rationed) + 1.0 < np.mean(fednlp)


def test_sequential_counts_have_exact_margins_and_bad_allocation_is_rejected():
    labels = labels_with_uneven_prior(3)
    rng = np.random.default_rng(0)
    counts = dirichlet_label.dirichlet_counts(labels, N_CLASSES, 37, 0.05, rng)  # 6000 / 37: unequal sizes
    assert np.array_equal(counts.sum(axis=0), np.bincount(labels, minlength=N_CLASSES))
    assert set(counts.sum(axis=1).tolist()) == {6000 // 37, 6000 // 37 + 1}
    assert (counts >= 0).all()
    with pytest.raises(partitioners.PartitionError, match="allocation='nope'.*fednlp or rationed"):
        partitioners.make("dirichlet_label", 4, 0, allocation="nope")
    with pytest.raises(partitioners.PartitionError, match="allocation='nope'.*fednlp, rationed"):
        dirichlet_label.dirichlet_counts(labels, N_CLASSES, 37, 0.05, rng, allocation="nope")


def test_shortfall_is_spread_in_proportion_smallest_first():
    """Hand-computed: 7 rows short, classes with 0, 1, 4, 15 rows left (total 20).
    Shares ceil(1*7/20)=1, ceil(4*7/20)=2, ceil(15*7/20)=6 -> 1 + 2 + 4 (the last one capped at what is short)."""
    spread = dirichlet_label.spread_shortfall
    assert spread(np.array([15, 0, 4, 1]), 7).tolist() == [4, 0, 2, 1]
    assert spread(np.array([3, 0, 2]), 5).tolist() == [3, 0, 2]  # everything left
    assert spread(np.array([0, 0]), 3).tolist() == [0, 0]
