"""Seeded train/test splits, by row or by document (so one article never feeds both splits)."""
from __future__ import annotations

from typing import Sequence

import numpy as np


def split_rows(
    n_rows: int, split_seed: int, test_fraction: float, docs: Sequence[str] | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Sorted ``(train, test)`` row indices.

    Without ``docs`` rows are split directly; with ``docs`` whole documents go
    to one side (``test_fraction`` of the documents, at least one) so that
    sentences or questions of one article are never in both splits.
    """
    rng = np.random.default_rng(split_seed)
    if docs is None:
        order = rng.permutation(n_rows)
        n_test = max(1, int(round(n_rows * test_fraction)))
        return np.sort(order[n_test:]), np.sort(order[:n_test])
    names, codes = np.unique(np.asarray(docs), return_inverse=True)
    n_test = max(1, int(round(len(names) * test_fraction)))
    is_test = np.zeros(len(names), dtype=bool)
    is_test[rng.permutation(len(names))[:n_test]] = True
    test_mask = is_test[codes]
    return np.flatnonzero(~test_mask), np.flatnonzero(test_mask)
