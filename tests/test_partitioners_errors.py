"""Every bad input gives a one-line PartitionError naming the bad value and what is allowed."""

from __future__ import annotations

import numpy as np
import pytest

from fednlp_bench import partitioners
from fednlp_bench.partitioners import PartitionError

LABELS = np.arange(100) % 4


def raises(fn, *fragments: str) -> str:
    with pytest.raises(PartitionError) as info:
        fn()
    msg = str(info.value)
    assert "\n" not in msg
    for frag in fragments:
        assert frag in msg, msg
    return msg


def test_partition_error_is_value_error() -> None:
    assert issubclass(PartitionError, ValueError)


def test_unknown_method_lists_available_and_suggests() -> None:
    msg = raises(lambda: partitioners.make("dirichlet_lable", 4, 0), "'dirichlet_lable'", "did you mean 'dirichlet_label'")
    for name in partitioners.available():
        assert name in msg
    raises(lambda: partitioners.make("zzz", 4, 0), "available: dirichlet_label")


def test_unknown_param_names_key_and_allowed() -> None:
    raises(lambda: partitioners.make("dirichlet_label", 4, 0, beta=1.0), "'beta'", "allowed: allocation, alpha")
    raises(lambda: partitioners.make("quantity", 4, 0, alpha=1.0), "'alpha'", "allowed: beta, min_size")
    raises(lambda: partitioners.make("uniform", 4, 0, alpha=1.0), "allowed: none")


@pytest.mark.parametrize("alpha", [0, -1, 0.001, 1e7, float("nan")])
def test_alpha_out_of_range(alpha: float) -> None:
    raises(lambda: partitioners.make("dirichlet_label", 4, 0, alpha=alpha), f"alpha={alpha!r}", "0.01 <= alpha <= 1e+06")


def test_bad_param_types_and_values() -> None:
    raises(lambda: partitioners.make("dirichlet_label", 4, 0, alpha="abc"), "alpha='abc'", "float")
    raises(lambda: partitioners.make("quantity", 4, 0, beta=0), "beta=0.0")
    raises(lambda: partitioners.make("quantity", 4, 0, min_size=-1), "min_size=-1")
    raises(lambda: partitioners.make("quantity", 4, 0, min_size=1.5), "min_size=1.5", "int")
    raises(lambda: partitioners.make("shard", 4, 0, shards_per_client=0), "shards_per_client=0")
    raises(lambda: partitioners.make("natural", 0, 0, min_group_size=0), "min_group_size=0")
    raises(lambda: partitioners.make("feature_cluster", 4, 0, n_clusters=0), "n_clusters=0")


@pytest.mark.parametrize("n_clients", [0, -3, 2.5, "4", True])
def test_bad_n_clients(n_clients) -> None:
    raises(lambda: partitioners.make("uniform", n_clients, 0), "n_clients")


def test_bad_seed() -> None:
    raises(lambda: partitioners.make("uniform", 2, -1), "seed")


def test_more_clients_than_rows() -> None:
    raises(lambda: partitioners.make("dirichlet_label", 101, 0).split(labels=LABELS), "n_clients=101", "(100)")
    raises(lambda: partitioners.make("shard", 30, 0, shards_per_client=4).split(labels=LABELS), "120", "(100)")
    raises(lambda: partitioners.make("quantity", 10, 0, min_size=11).split(n_rows=100), "min_size=11")
    raises(lambda: partitioners.make("feature_cluster", 2, 0, n_clusters=5).split(features=np.zeros((4, 2))), "n_clusters=5")


@pytest.mark.parametrize("name", ["dirichlet_label", "shard"])
def test_missing_labels(name: str) -> None:
    raises(lambda: partitioners.make(name, 4, 0).split(n_rows=100), f"{name} needs labels=")


def test_missing_groups_and_features() -> None:
    raises(lambda: partitioners.make("natural", 0, 0).split(labels=LABELS), "natural needs groups=")
    raises(lambda: partitioners.make("feature_cluster", 2, 0).split(labels=LABELS), "needs features=")
    raises(lambda: partitioners.make("uniform", 2, 0).split(), "needs n_rows=")


def test_shape_mismatches() -> None:
    p = partitioners.make("dirichlet_label", 4, 0)
    raises(lambda: p.split(labels=LABELS, n_rows=99), "labels=100", "n_rows=99")
    raises(lambda: p.split(labels=LABELS.reshape(10, 10)), "labels must be 1-D", "(10, 10)")
    raises(lambda: partitioners.make("feature_cluster", 2, 0).split(features=np.zeros(10)), "features must be 2-D")
    raises(lambda: partitioners.make("feature_cluster", 2, 0).split(features=np.full((10, 2), np.nan)), "NaN")
    raises(lambda: partitioners.make("uniform", 2, 0).split(labels=LABELS, groups=np.arange(5)), "groups=5")
    raises(lambda: p.split(labels=np.array([1, "a", None], dtype=object)), "comparable")
    raises(
        lambda: partitioners.make("feature_cluster", 2, 0, n_clusters=2).split_train_test(
            train_features=np.random.default_rng(0).normal(size=(20, 3)), test_features=np.zeros((5, 4))
        ),
        "dim 4",
    )


def test_natural_client_count_rule() -> None:
    raises(lambda: partitioners.make("natural", 5, 0).split(groups=np.arange(20) % 3), "n_clients=5", "give 3 clients", "n_clients=0")
