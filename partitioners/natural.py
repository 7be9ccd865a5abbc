"""Natural partition: one client per value of a group column (movie, agency, outlet, topic).

The "natural" non-IID split used by LEAF (Caldas et al. 2018) and FedNLP (Lin et al. 2022).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
from fednlp_bench.partitioners.allocation import parts_from_owner
from fednlp_bench.partitioners.base import Partitioner, PartitionerParams
from fednlp_bench.partitioners.errors import PartitionError
from fednlp_bench.partitioners.inputs import Inputs, encode

from fednlp_bench.hparams import param


@dataclass(frozen=True)
class NaturalParams(PartitionerParams):
    """``min_group_size``: groups with fewer rows are pooled into one client (1 = no pooling)."""

    _prefix = "natural: "
    min_group_size: int = param(1, low=1)


@dataclass(frozen=True)
class NaturalPlan:
    values: np.ndarray  # distinct group values, sorted
    client_of_value: np.ndarray  # client id per distinct value
    n_clients: int


def group_clients(values: np.ndarray, sizes: np.ndarray, min_group_size: int) -> tuple[np.ndarray, int]:
    """Client id per group. Rule: every group of at least ``min_group_size`` rows is its own
    client, in sorted group order; all smaller groups are pooled into one extra, last client;
    if that pool itself has fewer than ``min_group_size`` rows it joins the smallest regular
    client (ties: the first in sorted order). With no regular group the pool is the only client.
    """
    big = sizes >= min_group_size
    client = np.full(len(values), -1, dtype=np.int64)
    client[big] = np.arange(int(big.sum()))
    n_big = int(big.sum())
    if big.all():
        return client, n_big
    pooled = int(sizes[~big].sum())
    if n_big == 0:
        client[:] = 0
        return client, 1
    if pooled >= min_group_size:
        client[~big] = n_big
        return client, n_big + 1
    smallest = int(np.flatnonzero(big)[np.argmin(sizes[big])])
    client[~big] = client[smallest]
    return client, n_big


class Natural(Partitioner):
    """One client per distinct ``groups`` value; small groups pooled (see :func:`group_clients`).

    ``n_clients`` must be 0 (or None), meaning "as many as the groups give", or equal to the
    resulting number of clients; anything else is a :class:`PartitionError` (no silent merging).
    Test split: test rows go to the client of their group; rows of groups unseen in train are
    dealt uniformly at random over the clients.
    """

    name = "natural"
    Params = NaturalParams
    requires = ("groups",)
    auto_clients = True

    def plan(self, groups: Any) -> NaturalPlan:
        """Group -> client map for ``groups`` (validates ``n_clients`` against it)."""
        return self._plan(*encode(groups, name="groups"))

    def _plan(self, values: np.ndarray, codes: np.ndarray) -> NaturalPlan:
        sizes = np.bincount(codes, minlength=len(values))
        client, n = group_clients(values, sizes, self.params.min_group_size)
        if self.n_clients not in (0, n):
            raise PartitionError(
                f"natural: n_clients={self.n_clients} but the groups give {n} clients "
                f"(min_group_size={self.params.min_group_size}); pass n_clients=0 to use as many as groups"
            )
        return NaturalPlan(values=values, client_of_value=client, n_clients=n)

    def client_groups(self, groups: Any) -> list[list[Any]]:
        """Group values held by each client (one per client unless pooled)."""
        plan = self.plan(groups)
        order = np.argsort(plan.client_of_value, kind="stable")
        bounds = np.cumsum(np.bincount(plan.client_of_value, minlength=plan.n_clients))[:-1]
        return [v.tolist() for v in np.split(plan.values[order], bounds)]

    def _split(self, inputs: Inputs, rng: np.random.Generator) -> tuple[list[np.ndarray], NaturalPlan]:
        values, codes = encode(inputs.groups, name="groups")
        plan = self._plan(values, codes)
        return parts_from_owner(plan.client_of_value[codes], plan.n_clients), plan

    def _apply_plan(self, plan: NaturalPlan, inputs: Inputs, train: Inputs, rng: np.random.Generator) -> list[np.ndarray]:
        values, codes = encode(inputs.groups, name="groups")
        try:
            pos = np.minimum(np.searchsorted(plan.values, values), len(plan.values) - 1)
        except TypeError:
            raise PartitionError(
                f"natural: test groups ({values.dtype}) are not comparable with train groups ({plan.values.dtype})"
            ) from None
        seen = plan.values[pos] == values
        client = np.where(seen, plan.client_of_value[pos], -1)[codes]
        unseen = client < 0
        client[unseen] = rng.integers(0, plan.n_clients, size=int(unseen.sum()))
        return parts_from_owner(client, plan.n_clients)
