"""Property tests: exact cover and determinism over random sizes, client counts and alphas."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from fednlp_bench import partitioners


def exact(parts: list[np.ndarray], n: int) -> bool:
    flat = np.concatenate(parts)
    return len(flat) == n and np.array_equal(np.sort(flat), np.arange(n)) and all(np.all(np.diff(p) > 0) for p in parts)


@st.composite
def cases(draw):
    n_rows = draw(st.integers(1, 400))
    n_clients = draw(st.integers(1, n_rows))
    n_classes = draw(st.integers(1, 12))
    alpha = draw(st.floats(0.01, 1e6))
    seed = draw(st.integers(0, 2**32 - 1))
    labels = np.random.default_rng(draw(st.integers(0, 1000))).integers(0, n_classes, n_rows)
    return n_rows, n_clients, alpha, seed, labels


@settings(max_examples=60, deadline=None)
@given(cases())
def test_dirichlet_label_exact_and_deterministic(case) -> None:
    n_rows, n_clients, alpha, seed, labels = case
    p = partitioners.make("dirichlet_label", n_clients, seed, alpha=alpha)
    a, b = p.split(labels=labels), p.split(labels=labels)
    assert len(a) == n_clients and exact(a, n_rows)
    assert all(x.tobytes() == y.tobytes() for x, y in zip(a, b))
    sizes = [len(x) for x in a]
    assert max(sizes) - min(sizes) <= 1  # (nearly) equal clients


@settings(max_examples=40, deadline=None)
@given(cases(), st.integers(1, 200))
def test_train_test_exact_every_label_method(case, n_test) -> None:
    n_rows, n_clients, alpha, seed, labels = case
    test = np.random.default_rng(seed).integers(0, 12, n_test)
    shards = max(1, min(3, n_rows // n_clients))
    for name, params in (
        ("uniform", {}),
        ("dirichlet_label", {"alpha": alpha}),
        ("quantity", {"beta": alpha, "min_size": n_rows // n_clients}),
        ("shard", {"shards_per_client": shards}),
    ):
        part = partitioners.make(name, n_clients, seed, **params).split_train_test(labels, test)
        assert exact(part.train, n_rows) and exact(part.test, n_test), name
        assert len(part.test) == n_clients
