"""Name -> partitioner class; modules are imported lazily (feature_cluster pulls in scikit-learn)."""

from __future__ import annotations

import difflib
import importlib
from typing import Any

from fednlp_bench.partitioners.base import Partitioner
from fednlp_bench.partitioners.errors import PartitionError

_METHODS: dict[str, str] = {
    "uniform": "fednlp_bench.partitioners.uniform:Uniform",
    "dirichlet_label": "fednlp_bench.partitioners.dirichlet_label:DirichletLabel",
    "quantity": "fednlp_bench.partitioners.quantity:Quantity",
    "shard": "fednlp_bench.partitioners.shard:Shard",
    "natural": "fednlp_bench.partitioners.natural:Natural",
    "feature_cluster": "fednlp_bench.partitioners.feature_cluster:FeatureCluster",
}


def available() -> list[str]:
    """Sorted names of the registered partitioners."""
    return sorted(_METHODS)


def get(name: str) -> type[Partitioner]:
    """The partitioner class registered as ``name``."""
    if name not in _METHODS:
        close = difflib.get_close_matches(str(name), list(_METHODS), n=1)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        raise PartitionError(f"unknown partition method {name!r}{hint} available: {', '.join(available())}")
    module, cls = _METHODS[name].split(":")
    return getattr(importlib.import_module(module), cls)


def make(name: str, n_clients: int | None, seed: int = 0, **params: Any) -> Partitioner:
    """Build a partitioner by registry name, e.g. ``make("dirichlet_label", 100, 0, alpha=0.5)``."""
    return get(name)(n_clients, seed, **params)
