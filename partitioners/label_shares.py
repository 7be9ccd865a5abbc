"""Test-split rule shared by the label-based methods (dirichlet_label, shard, feature_cluster).

The plan of a label-based train split is its (n_clients x n_classes) count matrix. Test rows
of class ``c`` are dealt to clients in proportion to each client's share of train class ``c``,
so a client's test label distribution matches its train one (exactly so when the train and test
priors agree). Test classes unseen in train are dealt in proportion to client train sizes.
"""

from __future__ import annotations

import numpy as np
from fednlp_bench.partitioners.allocation import largest_remainder_columns, owner_from_class_counts, parts_from_owner
from fednlp_bench.partitioners.errors import PartitionError


def test_codes(train_classes: np.ndarray, test_classes: np.ndarray, test_codes: np.ndarray) -> np.ndarray:
    """Map test class codes onto train class codes; unseen test classes get codes >= len(train_classes)."""
    try:
        pos = np.searchsorted(train_classes, test_classes)
    except TypeError:
        raise PartitionError(
            f"test labels ({test_classes.dtype}) are not comparable with train labels ({train_classes.dtype})"
        ) from None
    pos_c = np.minimum(pos, max(len(train_classes) - 1, 0))
    seen = (pos < len(train_classes)) & (train_classes[pos_c] == test_classes) if len(train_classes) else np.zeros(len(test_classes), bool)
    mapped = np.where(seen, pos_c, len(train_classes) + np.cumsum(~seen) - 1)
    return mapped[test_codes]


def split_like(train_counts: np.ndarray, codes: np.ndarray, rng: np.random.Generator) -> list[np.ndarray]:
    """Partition rows with class ids ``codes`` using the client shares of ``train_counts``."""
    n_clients, n_train_classes = train_counts.shape
    n_classes = max(n_train_classes, int(codes.max()) + 1 if len(codes) else 0)
    sizes = train_counts.sum(axis=1, keepdims=True).astype(np.float64)
    shares = np.concatenate([train_counts.astype(np.float64), np.repeat(sizes, n_classes - n_train_classes, axis=1)], axis=1)
    totals = np.bincount(codes, minlength=n_classes)
    counts = largest_remainder_columns(shares, totals)
    return parts_from_owner(owner_from_class_counts(codes, counts, rng), n_clients)
