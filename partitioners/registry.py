"""Name -> partitioner class; modules are imported lazily (feature_cluster pulls in scikit-learn).

A new partitioner is one module with a :class:`Partitioner` subclass plus one registration
line here (or an entry point in the ``fednlp_bench.partitioners`` group); see
docs/adding-a-partitioner.md.
"""

from __future__ import annotations

from typing import Any

from fednlp_bench.partitioners.base import Partitioner
from fednlp_bench.partitioners.errors import PartitionError
from fednlp_bench.registry import Registry, subclass_of


PARTITIONERS: Registry[type[Partitioner]] = Registry("partition method", PartitionError,
                                                     "fednlp_bench.partitioners",
                                                     subclass_of(Partitioner, "fednlp_bench.partitioners.Partitioner",
                                                                 PartitionError))
PARTITIONERS.add("uniform", "fednlp_bench.partitioners.uniform:Uniform")
PARTITIONERS.add("dirichlet_label", "fednlp_bench.partitioners.dirichlet_label:DirichletLabel")
PARTITIONERS.add("quantity", "fednlp_bench.partitioners.quantity:Quantity")
PARTITIONERS.add("shard", "fednlp_bench.partitioners.shard:Shard")
PARTITIONERS.add("natural", "fednlp_bench.partitioners.natural:Natural")
PARTITIONERS.add("feature_cluster", "fednlp_bench.partitioners.feature_cluster:FeatureCluster")
PARTITIONERS.add("fednlp", "fednlp_bench.partitioners.fednlp_file:FedNLPFile")


def available() -> list[str]:
    """Sorted names of the registered partitioners."""
    return PARTITIONERS.names()


def get(name: str) -> type[Partitioner]:
    """The partitioner class registered as ``name``."""
    text = str(name)
    if text not in PARTITIONERS.names() and (text.endswith((".h5", ".hdf5")) or "_clients=" in text):
        raise PartitionError(f"unknown partition method {text!r}; a FedNLP partition file is --partition fednlp "
                             f"--set partition.file=FILE --set partition.key=KEY (e.g. niid_label_clients=100_alpha=1.0)")
    return PARTITIONERS.get(name)


def make(name: str, n_clients: int | None, seed: int = 0, **params: Any) -> Partitioner:
    """Build a partitioner by registry name, e.g. ``make("dirichlet_label", 100, 0, alpha=0.5)``."""
    return get(name)(n_clients, seed, **params)
