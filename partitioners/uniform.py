"""IID partition: rows shuffled and dealt into clients of (nearly) equal size."""

from __future__ import annotations

import numpy as np

from fednlp_bench.partitioners.allocation import largest_remainder, owner_from_sizes, parts_from_owner
from fednlp_bench.partitioners.base import NoParams, Partitioner
from fednlp_bench.partitioners.inputs import Inputs


class Uniform(Partitioner):
    """IID baseline (FedNLP's ``uniform``, Lin et al. 2022): sizes differ by at most one row.

    Needs only the number of rows (``n_rows`` or any input array). The test split is dealt
    with the same client-size proportions.
    """

    name = "uniform"
    Params = NoParams

    def _split(self, inputs: Inputs, rng: np.random.Generator) -> tuple[list[np.ndarray], np.ndarray]:
        sizes = largest_remainder(np.ones(self.n_clients), inputs.n_rows)
        return parts_from_owner(owner_from_sizes(sizes, rng), self.n_clients), sizes

    def _apply_plan(self, plan: np.ndarray, inputs: Inputs, train: Inputs, rng: np.random.Generator) -> list[np.ndarray]:
        sizes = largest_remainder(plan, inputs.n_rows)
        return parts_from_owner(owner_from_sizes(sizes, rng), self.n_clients)
