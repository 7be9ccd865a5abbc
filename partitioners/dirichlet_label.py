"""Label skew: per-client class proportions drawn from a Dirichlet around the global prior.

Hsu, Qi and Brown 2019, "Measuring the effects of non-identical data distribution for
federated visual classification"; used for text in FedNLP (Lin et al. 2022, label-skew partitions).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from fednlp_bench.partitioners.allocation import (
    largest_remainder,
    owner_from_class_counts,
    parts_from_owner,
    round_matrix,
)
from fednlp_bench.partitioners.base import Partitioner, PartitionerParams
from fednlp_bench.partitioners.inputs import Inputs
from fednlp_bench.partitioners.label_shares import split_like, test_codes

from fednlp_bench.hparams import param

ALPHA_MIN, ALPHA_MAX = 0.01, 1e6


def alpha_param(default: float = 1.0) -> float:
    """A Dirichlet concentration field, in [ALPHA_MIN, ALPHA_MAX]."""
    return param(default, low=ALPHA_MIN, high=ALPHA_MAX)


@dataclass(frozen=True)
class DirichletLabelParams(PartitionerParams):
    """``alpha``: concentration; small = each client holds few classes, large = IID."""

    _prefix = "dirichlet_label: "
    alpha: float = alpha_param()


def dirichlet_counts(
    codes: np.ndarray, n_classes: int, n_clients: int, alpha: float, rng: np.random.Generator
) -> np.ndarray:
    """(n_clients x n_classes) integer counts: rows sum to equal client sizes, columns to class sizes.

    Each client draws ``q_k ~ Dir(alpha * p)`` (``p`` the label prior) and asks for
    ``n_k * q_k`` rows per class. Oversubscribed classes are rationed in proportion to the
    requests; clients then fill their remaining capacity from the leftover rows
    (:func:`fill_leftovers`), the vectorised analogue of FedNLP's "fill from the remaining
    labels when one runs out".
    """
    class_sizes = np.bincount(codes, minlength=n_classes)
    prior = class_sizes / class_sizes.sum()
    sizes = largest_remainder(np.ones(n_clients), int(class_sizes.sum()))
    q = rng.dirichlet(alpha * prior, size=n_clients) if n_classes > 1 else np.ones((n_clients, 1))
    q = np.nan_to_num(q, nan=0.0)
    want = sizes[:, None] * q
    demand = want.sum(axis=0)
    scale = np.where(demand > class_sizes, class_sizes / np.where(demand > 0, demand, 1.0), 1.0)
    got = want * scale
    room = np.maximum(sizes - got.sum(axis=1), 0.0)
    left = np.maximum(class_sizes - got.sum(axis=0), 0.0)
    got += fill_leftovers(room, left, rng)
    return round_matrix(got, sizes, class_sizes)


def fill_leftovers(room: np.ndarray, left: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Transport ``left`` (per class) into ``room`` (per client) by the north-west corner rule
    over a random client order and a random class order: each client tops up from as few
    classes as possible (at most n_clients + n_classes - 1 non-zero cells), which keeps the
    skew of small ``alpha``. Vectorised as overlaps of the two cumulative-sum intervals."""
    total = left.sum()
    if total <= 0:
        return np.zeros((len(room), len(left)))
    room = room * (total / room.sum())
    ck, cc = rng.permutation(len(room)), rng.permutation(len(left))
    r_hi = np.cumsum(room[ck])
    l_hi = np.cumsum(left[cc])
    r_lo, l_lo = r_hi - room[ck], l_hi - left[cc]
    overlap = np.minimum(r_hi[:, None], l_hi[None, :]) - np.maximum(r_lo[:, None], l_lo[None, :])
    out = np.empty((len(room), len(left)))
    out[np.ix_(ck, cc)] = np.maximum(overlap, 0.0)
    return out


class DirichletLabel(Partitioner):
    """Label-skew partition with clients of (nearly) equal size (``alpha`` in [0.01, 1e6]).

    Labels may be ints or any comparable values; for sequence tagging pass the sorted
    entity-type set of each sentence as one string, e.g. ``"LOC|PER"`` (as FedNLP did).
    Test split: each client keeps its share of every class (see ``label_shares``).
    """

    name = "dirichlet_label"
    Params = DirichletLabelParams
    requires = ("labels",)

    def _split(self, inputs: Inputs, rng: np.random.Generator) -> tuple[list[np.ndarray], np.ndarray]:
        codes = inputs.labels
        counts = dirichlet_counts(codes, len(inputs.classes), self.n_clients, self.params.alpha, rng)
        owner = owner_from_class_counts(codes, counts, rng)
        return parts_from_owner(owner, self.n_clients), counts

    def _apply_plan(self, plan: np.ndarray, inputs: Inputs, train: Inputs, rng: np.random.Generator) -> list[np.ndarray]:
        return split_like(plan, test_codes(train.classes, inputs.classes, inputs.labels), rng)
