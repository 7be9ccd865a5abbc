"""Feature skew: KMeans clusters of sentence embeddings, then Dirichlet label skew over clusters.

FedNLP's clustering-based partitions (Lin et al. 2022, ``kmeans.py`` + ``niid_cluster``) with the
Dirichlet of Hsu et al. 2019 over cluster ids. Embeddings: :mod:`partitioners.embeddings`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
from fednlp_bench.partitioners.allocation import owner_from_class_counts, parts_from_owner
from fednlp_bench.partitioners.base import Partitioner, PartitionerParams
from fednlp_bench.partitioners.dirichlet_label import alpha_param, dirichlet_counts
from fednlp_bench.partitioners.errors import PartitionError
from fednlp_bench.partitioners.inputs import Inputs, encode
from fednlp_bench.partitioners.label_shares import split_like, test_codes

from fednlp_bench.hparams import param

#: KMeans restarts; fixed so that a spec fully determines the partition
N_INIT = 4


@dataclass(frozen=True)
class FeatureClusterParams(PartitionerParams):
    """``n_clusters``: KMeans clusters K; ``alpha``: Dirichlet concentration over clusters."""

    _prefix = "feature_cluster: "
    n_clusters: int = param(10, low=1)
    alpha: float = alpha_param()


@dataclass(frozen=True)
class FeatureClusterPlan:
    kmeans: Any  # fitted sklearn.cluster.KMeans
    classes: np.ndarray  # non-empty cluster ids
    counts: np.ndarray  # clients x clusters


def cluster_ids(features: np.ndarray, n_clusters: int, seed: int) -> tuple[np.ndarray, Any]:
    """KMeans (scikit-learn, ``n_init`` fixed, ``random_state`` from ``seed``): ids and model."""
    from sklearn.cluster import KMeans

    km = KMeans(n_clusters=n_clusters, n_init=N_INIT, random_state=seed % 2**32)
    ids = km.fit_predict(np.ascontiguousarray(features, dtype=np.float32))
    return ids.astype(np.int64), km


class FeatureCluster(Partitioner):
    """Cluster ``features`` (n_rows x d, e.g. sentence embeddings) into ``n_clusters`` and split
    like ``dirichlet_label`` with the cluster id as the label.

    Test split: test features are assigned to the nearest train centroid, then each client keeps
    its share of every cluster (see ``label_shares``).
    """

    name = "feature_cluster"
    Params = FeatureClusterParams
    requires = ("features",)
    version = 2  # 2: dirichlet_counts follows FedNLP's sequential allocation (as FedNLP's niid_cluster)

    def _split(self, inputs: Inputs, rng: np.random.Generator) -> tuple[list[np.ndarray], FeatureClusterPlan]:
        p = self.params
        if p.n_clusters > inputs.n_rows:
            raise PartitionError(f"feature_cluster: n_clusters={p.n_clusters} exceeds the number of rows ({inputs.n_rows})")
        ids, km = cluster_ids(inputs.features, p.n_clusters, self.seed)
        classes, codes = encode(ids, name="cluster ids")
        counts = dirichlet_counts(codes, len(classes), self.n_clients, p.alpha, rng)
        owner = owner_from_class_counts(codes, counts, rng)
        return parts_from_owner(owner, self.n_clients), FeatureClusterPlan(km, classes, counts)

    def _apply_plan(
        self, plan: FeatureClusterPlan, inputs: Inputs, train: Inputs, rng: np.random.Generator
    ) -> list[np.ndarray]:
        if inputs.features.shape[1] != train.features.shape[1]:
            raise PartitionError(
                f"feature_cluster: test features have dim {inputs.features.shape[1]}, train features {train.features.shape[1]}"
            )
        ids = plan.kmeans.predict(np.ascontiguousarray(inputs.features, dtype=np.float32)).astype(np.int64)
        classes, codes = encode(ids, name="cluster ids")
        return split_like(plan.counts, test_codes(plan.classes, classes, codes), rng)
