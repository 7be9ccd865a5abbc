"""Pathological label skew: sort by label, cut into shards, deal ``shards_per_client`` per client.

McMahan et al. 2017, "Communication-efficient learning of deep networks from decentralized
data" (2 shards of one digit each per client for MNIST).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from fednlp_bench.partitioners.allocation import largest_remainder, parts_from_owner
from fednlp_bench.partitioners.base import Partitioner, PartitionerParams
from fednlp_bench.partitioners.errors import PartitionError
from fednlp_bench.partitioners.inputs import Inputs
from fednlp_bench.partitioners.label_shares import split_like, test_codes

from fednlp_bench.hparams import param


@dataclass(frozen=True)
class ShardParams(PartitionerParams):
    """``shards_per_client``: label-sorted shards each client receives."""

    _prefix = "shard: "
    shards_per_client: int = param(2, low=1)


class Shard(Partitioner):
    """Rows sorted by label (random order within a label), cut into ``n_clients * shards_per_client``
    shards of (nearly) equal size; each client gets ``shards_per_client`` random shards.

    Test split: each client keeps its share of every train class (see ``label_shares``).
    """

    name = "shard"
    Params = ShardParams
    requires = ("labels",)

    def _split(self, inputs: Inputs, rng: np.random.Generator) -> tuple[list[np.ndarray], np.ndarray]:
        k, s = self.n_clients, self.params.shards_per_client
        n_shards = k * s
        if inputs.n_rows < n_shards:
            raise PartitionError(
                f"shard: n_clients x shards_per_client = {n_shards} exceeds the number of rows ({inputs.n_rows})"
            )
        codes = inputs.labels
        perm = rng.permutation(inputs.n_rows)
        by_label = perm[np.argsort(codes[perm], kind="stable")]
        shard_of_pos = np.repeat(np.arange(n_shards), largest_remainder(np.ones(n_shards), inputs.n_rows))
        client_of_shard = np.empty(n_shards, dtype=np.int64)
        client_of_shard[rng.permutation(n_shards)] = np.arange(n_shards) // s
        owner = np.empty(inputs.n_rows, dtype=np.int64)
        owner[by_label] = client_of_shard[shard_of_pos]
        n_classes = len(inputs.classes)
        counts = np.bincount(owner * n_classes + codes, minlength=k * n_classes).reshape(k, n_classes)
        return parts_from_owner(owner, k), counts

    def _apply_plan(self, plan: np.ndarray, inputs: Inputs, train: Inputs, rng: np.random.Generator) -> list[np.ndarray]:
        return split_like(plan, test_codes(train.classes, inputs.classes, inputs.labels), rng)
