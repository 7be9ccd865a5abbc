"""Label skew: per-client class proportions drawn from a Dirichlet around the global prior.

Hsu, Qi and Brown 2019, "Measuring the effects of non-identical data distribution for
federated visual classification"; used for text in FedNLP (Lin et al. 2022, label-skew partitions).

Every client draws ``q_k ~ Dir(alpha p)`` (``p`` the label prior) and wants ``q_k n_k`` rows
per class; the classes run out, so how the wishes are rationed decides the partition's
statistics as much as ``alpha`` does. Two allocations (``allocation`` parameter):

* ``fednlp`` (default): FedNLP's procedure (``label_skew_process`` in its
  ``data/advanced_partition/niid_label.py``), reimplemented on counts. Clients are served one
  after the other; a client's wish is rounded per class in class order (the last class takes
  the rounding remainder, the running total is capped at the client's size); when a class
  has fewer rows left than asked, the client takes what is left and the shortfall is spread
  over all other classes in proportion to their remaining rows, rounded up (so each class
  with rows left gives at least one), smallest classes first. Late clients thus get more
  mixed data than their draw; with 20 classes and 100 clients at ``alpha = 0.01`` a client
  holds 4-5 classes on average. This is what FedNLP's published alpha values mean.
* ``rationed``: every client is served at once: oversubscribed classes are rationed in
  proportion to the wishes and the leftover rows are transported by the north-west corner
  rule over random orders (:func:`fill_leftovers`). Symmetric in the clients and closer to
  the nominal Dirichlet (about 2 classes per client in the setting above), but more skewed
  than FedNLP at small alpha: its alpha values are not FedNLP's.

Deviation from FedNLP kept in both: clients get equal sizes (they differ by at most one row;
FedNLP gives the last client the ``n mod n_clients`` extra rows), and the test split follows
each client's train shares (``label_shares``) instead of an independent draw.
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
from fednlp_bench.partitioners.errors import PartitionError
from fednlp_bench.partitioners.inputs import Inputs
from fednlp_bench.partitioners.label_shares import split_like, test_codes

from fednlp_bench.hparams import param

ALPHA_MIN, ALPHA_MAX = 0.01, 1e6
ALLOCATIONS = ("fednlp", "rationed")


def alpha_param(default: float = 1.0) -> float:
    """A Dirichlet concentration field, in [ALPHA_MIN, ALPHA_MAX]."""
    return param(default, low=ALPHA_MIN, high=ALPHA_MAX)


@dataclass(frozen=True)
class DirichletLabelParams(PartitionerParams):
    """``alpha``: concentration; small = each client holds few classes, large = IID.
    ``allocation``: ``fednlp`` (FedNLP's sequential procedure) or ``rationed`` (see the module doc)."""

    _prefix = "dirichlet_label: "
    alpha: float = alpha_param()
    allocation: str = param("fednlp", choices=ALLOCATIONS)


def check_allocation(method: str, allocation: str) -> None:
    if allocation not in ALLOCATIONS:
        raise PartitionError(f"{method}: allocation={allocation!r} is not known; allowed: {', '.join(ALLOCATIONS)}")


def dirichlet_counts(
    codes: np.ndarray, n_classes: int, n_clients: int, alpha: float, rng: np.random.Generator,
    allocation: str = "fednlp",
) -> np.ndarray:
    """(n_clients x n_classes) integer counts: rows sum to equal client sizes, columns to class sizes.

    Each client draws ``q_k ~ Dir(alpha * p)`` (``p`` the label prior); ``allocation`` says how
    the wishes ``n_k q_k`` are met when classes run out (module doc).
    """
    check_allocation("dirichlet_label", allocation)
    class_sizes = np.bincount(codes, minlength=n_classes)
    prior = class_sizes / class_sizes.sum()
    sizes = largest_remainder(np.ones(n_clients), int(class_sizes.sum()))
    q = draw_proportions(alpha * prior, n_clients, rng)
    if allocation == "fednlp":
        return sequential_counts(q, sizes, class_sizes)
    want = sizes[:, None] * q
    demand = want.sum(axis=0)
    scale = np.where(demand > class_sizes, class_sizes / np.where(demand > 0, demand, 1.0), 1.0)
    got = want * scale
    room = np.maximum(sizes - got.sum(axis=1), 0.0)
    left = np.maximum(class_sizes - got.sum(axis=0), 0.0)
    got += fill_leftovers(room, left, rng)
    return round_matrix(got, sizes, class_sizes)


def draw_proportions(concentration: np.ndarray, n_clients: int, rng: np.random.Generator) -> np.ndarray:
    """One Dirichlet draw per client; a draw that underflows to NaN is redrawn (as FedNLP does)."""
    if len(concentration) == 1:
        return np.ones((n_clients, 1))
    positive = concentration > 0  # a class absent from the data has weight 0 and gets nothing
    q = np.zeros((n_clients, len(concentration)))
    q[:, positive] = rng.dirichlet(concentration[positive], size=n_clients)
    for _ in range(100):
        bad = ~np.isfinite(q).all(axis=1)
        if not bad.any():
            break
        q[np.ix_(bad, positive)] = rng.dirichlet(concentration[positive], size=int(bad.sum()))
    return np.nan_to_num(q, nan=0.0)


def sequential_counts(q: np.ndarray, sizes: np.ndarray, class_sizes: np.ndarray) -> np.ndarray:
    """FedNLP's allocation (module doc): clients in turn, classes in order, shortfalls spread over the rest.

    Loops over clients and, within a client, over the classes that run short (a few at most);
    everything else is vectorised over classes.
    """
    left = np.asarray(class_sizes, dtype=np.int64).copy()
    counts = np.zeros(q.shape, dtype=np.int64)
    for k, size in enumerate(np.asarray(sizes, dtype=np.int64).tolist()):
        # round each class's wish; the running total is capped at the client's size and the
        # last class takes what the rounding left over
        running = np.minimum(np.cumsum(np.rint(q[k] * size).astype(np.int64)), size)
        running[-1] = size
        wish = np.diff(running, prepend=0)
        start = 0
        while start < len(wish):
            short = np.flatnonzero(wish[start:] > left[start:])
            stop = start + int(short[0]) if len(short) else len(wish)
            counts[k, start:stop] += wish[start:stop]
            left[start:stop] -= wish[start:stop]
            if stop == len(wish):
                break
            gap = int(wish[stop] - left[stop])
            counts[k, stop] += left[stop]
            left[stop] = 0
            extra = spread_shortfall(left, gap)
            counts[k] += extra
            left -= extra
            start = stop + 1
    return counts


def spread_shortfall(left: np.ndarray, gap: int) -> np.ndarray:
    """Rows to take from each class to cover ``gap``: ``ceil(left_c / total * gap)`` per class,
    smallest classes first, until ``gap`` is covered (FedNLP's ``dynamic_batch_fill``).

    Since ``gap <= total``, each share is at most ``left_c`` and the shares sum to at least ``gap``.
    """
    total = int(left.sum())
    out = np.zeros_like(left)
    if total <= 0 or gap <= 0:
        return out
    gap = min(gap, total)
    order = np.argsort(left, kind="stable")
    share = np.minimum(-(-left[order] * gap // total), left[order])  # integer ceil
    out[order] = np.diff(np.minimum(np.cumsum(share), gap), prepend=0)
    return out


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
    version = 2  # 2: FedNLP's sequential allocation by default (1: the rationed one)

    def _split(self, inputs: Inputs, rng: np.random.Generator) -> tuple[list[np.ndarray], np.ndarray]:
        codes = inputs.labels
        p = self.params
        counts = dirichlet_counts(codes, len(inputs.classes), self.n_clients, p.alpha, rng, p.allocation)
        owner = owner_from_class_counts(codes, counts, rng)
        return parts_from_owner(owner, self.n_clients), counts

    def _apply_plan(self, plan: np.ndarray, inputs: Inputs, train: Inputs, rng: np.random.Generator) -> list[np.ndarray]:
        return split_like(plan, test_codes(train.classes, inputs.classes, inputs.labels), rng)
