"""Partitioners: exact cover, determinism, behaviour of every method, train/test, cache."""

from __future__ import annotations

import numpy as np
import pytest

from fednlp_bench import partitioners
from fednlp_bench.partitioners import stats
from fednlp_bench.partitioners.cache import load_or_split, load_partition

N = 3000
ALL = ["uniform", "dirichlet_label", "quantity", "shard", "natural", "feature_cluster"]


def blobs(n: int, k: int, rng: np.random.Generator, dim: int = 8) -> tuple[np.ndarray, np.ndarray]:
    centres = rng.normal(scale=10.0, size=(k, dim))
    ids = rng.integers(0, k, n)
    return centres[ids] + rng.normal(size=(n, dim)), ids


@pytest.fixture(scope="module")
def data() -> dict[str, dict[str, np.ndarray]]:
    rng = np.random.default_rng(7)
    tr_x, _ = blobs(N, 4, rng)
    te_x, _ = blobs(N // 3, 4, rng)
    return {
        "train": {"labels": rng.integers(0, 6, N), "groups": rng.integers(0, 12, N), "features": tr_x},
        "test": {"labels": rng.integers(0, 6, N // 3), "groups": rng.integers(0, 12, N // 3), "features": te_x},
    }


def build(name: str, seed: int = 0) -> partitioners.Partitioner:
    params = {
        "dirichlet_label": {"alpha": 0.3},
        "quantity": {"beta": 0.5, "min_size": 3},
        "shard": {"shards_per_client": 2},
        "feature_cluster": {"n_clusters": 4, "alpha": 0.5},
    }.get(name, {})
    return partitioners.make(name, 0 if name == "natural" else 20, seed, **params)


def kwargs(split: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    return {"labels": split["labels"], "groups": split["groups"], "features": split["features"]}


def assert_exact_cover(parts: list[np.ndarray], n: int) -> None:
    for p in parts:
        assert p.dtype == np.int64
        assert np.all(np.diff(p) > 0), "indices must be sorted and unique"
    flat = np.concatenate(parts)
    assert len(flat) == n
    assert np.array_equal(np.sort(flat), np.arange(n))


def test_available_lists_all_methods() -> None:
    # `fednlp` replays a FedNLP partition file; it needs one, so it is tested in test_fednlp_files.py
    assert partitioners.available() == sorted([*ALL, "fednlp"])


@pytest.mark.parametrize("name", ALL)
def test_exact_cover_train_and_test(name: str, data) -> None:
    p = build(name)
    tr, te = data["train"], data["test"]
    part = p.split_train_test(
        tr["labels"], te["labels"], train_groups=tr["groups"], test_groups=te["groups"],
        train_features=tr["features"], test_features=te["features"],
    )
    assert_exact_cover(part.train, N)
    assert_exact_cover(part.test, N // 3)
    assert len(part.train) == len(part.test)
    assert part.spec == p.spec()
    # the train half is exactly what split() gives
    for a, b in zip(part.train, p.split(**kwargs(tr))):
        assert np.array_equal(a, b)


@pytest.mark.parametrize("name", ALL)
def test_same_seed_identical_different_seed_differs(name: str, data) -> None:
    a = build(name, seed=1).split(**kwargs(data["train"]))
    b = build(name, seed=1).split(**kwargs(data["train"]))
    assert len(a) == len(b)
    assert all(x.tobytes() == y.tobytes() for x, y in zip(a, b))
    if name != "natural":  # natural is deterministic by construction
        c = build(name, seed=2).split(**kwargs(data["train"]))
        assert any(not np.array_equal(x, y) for x, y in zip(a, c))


def test_spec_and_hash_are_stable() -> None:
    a = partitioners.make("dirichlet_label", 10, 3, alpha=1)
    b = partitioners.make("dirichlet_label", 10, 3, alpha="1.0")
    assert a.spec() == {"name": "dirichlet_label", "params": {"alpha": 1.0, "allocation": "fednlp"}, "n_clients": 10,
                        "seed": 3, "version": 2}
    assert a.spec_hash() == b.spec_hash()
    assert len(a.spec_hash()) == 64
    assert a.spec_hash() != partitioners.make("dirichlet_label", 10, 4, alpha=1).spec_hash()


def test_uniform_sizes_and_n_rows() -> None:
    parts = partitioners.make("uniform", 7, 0).split(n_rows=100)
    assert_exact_cover(parts, 100)
    assert sorted(len(p) for p in parts) == [14] * 5 + [15] * 2


def test_dirichlet_js_goes_to_zero_with_alpha_and_is_large_at_small_alpha() -> None:
    # measured at these sizes over seeds 0-4: alpha=1e6 -> 2.5e-5..2.9e-5, alpha=0.01 -> 0.67..0.70
    # (the maximum, one-hot clients vs a uniform 10-class prior, is 0.758)
    rng = np.random.default_rng(100)
    labels = rng.integers(0, 10, 20000)
    js = {}
    for alpha in (0.01, 1.0, 100.0, 1e6):
        parts = partitioners.make("dirichlet_label", 50, 0, alpha=alpha).split(labels=labels)
        assert_exact_cover(parts, len(labels))
        assert {len(p) for p in parts} == {400}
        js[alpha] = stats.mean_js_divergence(parts, labels)
    assert js[1e6] < 1e-3
    assert js[0.01] > 0.5
    assert js[0.01] > js[1.0] > js[100.0] > js[1e6]


def test_dirichlet_string_labels_entity_sets() -> None:
    labels = np.array(["LOC|PER", "O", "ORG", "LOC", "LOC|ORG|PER"] * 60)
    parts = partitioners.make("dirichlet_label", 6, 0, alpha=0.5).split(labels=labels)
    assert_exact_cover(parts, len(labels))
    assert {len(p) for p in parts} == {50}


def test_dirichlet_test_follows_client_proportions() -> None:
    rng = np.random.default_rng(3)
    train, test = rng.integers(0, 5, 20000), rng.integers(0, 5, 10000)
    part = partitioners.make("dirichlet_label", 10, 0, alpha=0.2).split_train_test(train, test)
    tr = stats.label_matrix(part.train, train) / np.array([len(p) for p in part.train])[:, None]
    te = stats.label_matrix(part.test, test) / np.array([len(p) for p in part.test])[:, None]
    assert np.abs(tr - te).max() < 0.05
    # unseen test class still lands somewhere exactly once
    part = partitioners.make("dirichlet_label", 10, 0, alpha=0.2).split_train_test(train, np.append(test, 99))
    assert_exact_cover(part.test, len(test) + 1)


def test_quantity_skewed_sizes_and_min_size() -> None:
    labels = np.random.default_rng(0).integers(0, 4, 5000)
    parts = partitioners.make("quantity", 50, 0, beta=0.1, min_size=20).split(labels=labels)
    sizes = np.array([len(p) for p in parts])
    assert_exact_cover(parts, 5000)
    assert sizes.min() >= 20
    assert sizes.max() > 5 * sizes.mean()  # strong skew at beta=0.1 (measured max ~ 20x mean)
    even = partitioners.make("quantity", 50, 0, beta=1e6, min_size=1).split(n_rows=5000)
    assert max(len(p) for p in even) - min(len(p) for p in even) <= 3
    part = partitioners.make("quantity", 50, 0, beta=0.1, min_size=20).split_train_test(train_rows=5000, test_rows=3000)
    assert min(len(p) for p in part.test) >= 20
    assert np.corrcoef(part.sizes("train"), part.sizes("test"))[0, 1] > 0.99


def test_shard_label_counts_per_client() -> None:
    labels = np.repeat(np.arange(10), 100)  # 10 classes x 100 rows, 20 shards of 50
    parts = partitioners.make("shard", 10, 0, shards_per_client=2).split(labels=labels)
    assert_exact_cover(parts, 1000)
    counts = stats.label_matrix(parts, labels)
    assert np.all(counts.sum(axis=1) == 100)
    assert np.all((counts > 0).sum(axis=1) <= 2)  # each shard is one class
    assert set(np.unique(counts)) <= {0, 50, 100}


def test_natural_one_client_per_group_and_merging() -> None:
    groups = np.array(["a"] * 50 + ["b"] * 30 + ["c"] * 5 + ["d"] * 4 + ["e"] * 20)
    p = partitioners.make("natural", 0, 0)
    parts = p.split(groups=groups)
    assert len(parts) == 5
    for part, g in zip(parts, "abcde"):
        assert set(groups[part]) == {g}
    merged = partitioners.make("natural", None, 0, min_group_size=8)
    parts = merged.split(groups=groups)
    assert merged.client_groups(groups) == [["a"], ["b"], ["e"], ["c", "d"]]  # pool of 9 >= 8: own client
    assert [len(x) for x in parts] == [50, 30, 20, 9]
    pooled = partitioners.make("natural", 0, 0, min_group_size=25)  # pool c+d+e = 29 >= 25
    assert pooled.client_groups(groups) == [["a"], ["b"], ["c", "d", "e"]]
    big_pool = partitioners.make("natural", 0, 0, min_group_size=31)  # pool b..e = 59 >= 31
    assert big_pool.client_groups(groups) == [["a"], ["b", "c", "d", "e"]]
    single = partitioners.make("natural", 0, 0, min_group_size=51)  # no group is big enough
    assert single.client_groups(groups) == [["a", "b", "c", "d", "e"]]
    fold = partitioners.make("natural", 0, 0, min_group_size=21)  # pool c+d+e = 29 >= 21
    assert fold.client_groups(groups) == [["a"], ["b"], ["c", "d", "e"]]
    joins = partitioners.make("natural", 0, 0, min_group_size=10)  # pool c+d = 9 < 10 -> smallest (e)
    assert joins.client_groups(groups) == [["a"], ["b"], ["c", "d", "e"]]
    assert partitioners.make("natural", 3, 0, min_group_size=10).split(groups=groups)[2].size == 29


def test_natural_test_split_same_groups_and_unseen() -> None:
    tr = np.array(["x", "y", "y", "z"] * 10)
    te = np.array(["z", "x", "new", "y"])
    part = partitioners.make("natural", 0, 0).split_train_test(train_groups=tr, test_groups=te)
    assert_exact_cover(part.test, 4)
    owner = {int(i): c for c, p in enumerate(part.test) for i in p}
    assert owner[1] == 0 and owner[3] == 1 and owner[0] == 2


def test_feature_cluster_on_blobs() -> None:
    rng = np.random.default_rng(0)
    x, ids = blobs(2000, 4, rng)
    p = partitioners.make("feature_cluster", 8, 0, n_clusters=4, alpha=0.01)
    parts = p.split(features=x)
    assert_exact_cover(parts, 2000)
    # blobs are recovered, and with tiny alpha most clients are dominated by one blob
    counts = stats.label_matrix(parts, ids)
    assert np.mean(counts.max(axis=1) / counts.sum(axis=1)) > 0.7
    iid = partitioners.make("feature_cluster", 8, 0, n_clusters=4, alpha=1e6).split(features=x)
    assert stats.mean_js_divergence(iid, ids) < 0.01


def test_cache_round_trip_and_hit(tmp_path, data) -> None:
    p = build("dirichlet_label")
    arrays = {"train_labels": data["train"]["labels"], "test_labels": data["test"]["labels"]}
    a = load_or_split(p, tmp_path, "toy", **arrays)
    files = list(tmp_path.glob("*.npz"))
    assert len(files) == 1 and not list(tmp_path.glob("*.tmp"))
    b = load_partition(files[0])
    assert all(np.array_equal(x, y) for x, y in zip(a.train + a.test, b.train + b.test))
    assert b.spec == p.spec()
    files[0].write_bytes(b"garbage")  # corrupt cache is recomputed
    c = load_or_split(p, tmp_path, "toy", **arrays)
    assert all(np.array_equal(x, y) for x, y in zip(a.train, c.train))
    load_or_split(p, tmp_path, "other", **arrays)
    load_or_split(build("dirichlet_label", seed=5), tmp_path, "toy", **arrays)
    assert len(list(tmp_path.glob("*.npz"))) == 3


def test_split_train_test_function_without_test() -> None:
    part = partitioners.split_train_test(partitioners.make("uniform", 3, 0), np.arange(10))
    assert part.test == [] and part.n_clients == 3
