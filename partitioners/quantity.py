"""Quantity skew: client sizes drawn from a Dirichlet over clients, labels IID.

The client-size model of Li et al. 2022 ("Federated learning on non-IID data silos: an
experimental study") as used by FedNLP's ``niid_quantity`` partitions (Lin et al. 2022).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from fednlp_bench.partitioners.allocation import largest_remainder, owner_from_sizes, parts_from_owner
from fednlp_bench.partitioners.base import Partitioner, PartitionerParams
from fednlp_bench.partitioners.dirichlet_label import alpha_param
from fednlp_bench.partitioners.errors import PartitionError
from fednlp_bench.partitioners.inputs import Inputs

from fednlp_bench.hparams import param


@dataclass(frozen=True)
class QuantityParams(PartitionerParams):
    """``beta``: Dirichlet concentration over clients (small = very unequal sizes);
    ``min_size``: rows every client is guaranteed."""

    _prefix = "quantity: "
    beta: float = alpha_param()
    min_size: int = param(1, low=0)


def sizes_with_minimum(weights: np.ndarray, n_rows: int, min_size: int) -> np.ndarray:
    """``min_size`` rows per client plus the rest split in proportion to ``weights``."""
    rest = n_rows - min_size * len(weights)
    return min_size + largest_remainder(weights, rest)


class Quantity(Partitioner):
    """Client sizes ``~ Dir(beta * 1)`` with at least ``min_size`` rows each; rows drawn IID.

    Test split: the same client-size proportions, with
    ``min(min_size, n_test // n_clients)`` rows guaranteed per client.
    """

    name = "quantity"
    Params = QuantityParams

    def _split(self, inputs: Inputs, rng: np.random.Generator) -> tuple[list[np.ndarray], np.ndarray]:
        p = self.params
        if inputs.n_rows < p.min_size * self.n_clients:
            raise PartitionError(
                f"quantity: min_size={p.min_size} x n_clients={self.n_clients} exceeds the number of rows ({inputs.n_rows})"
            )
        weights = rng.dirichlet(np.full(self.n_clients, p.beta)) if self.n_clients > 1 else np.ones(1)
        sizes = sizes_with_minimum(np.nan_to_num(weights), inputs.n_rows, p.min_size)
        return parts_from_owner(owner_from_sizes(sizes, rng), self.n_clients), sizes

    def _apply_plan(self, plan: np.ndarray, inputs: Inputs, train: Inputs, rng: np.random.Generator) -> list[np.ndarray]:
        floor = min(self.params.min_size, inputs.n_rows // self.n_clients)
        sizes = sizes_with_minimum(plan.astype(np.float64), inputs.n_rows, floor)
        return parts_from_owner(owner_from_sizes(sizes, rng), self.n_clients)
