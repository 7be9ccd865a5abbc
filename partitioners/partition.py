"""The result of a train/test split: per-client row indices for both splits."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np


@dataclass(frozen=True)
class Partition:
    """Per-client sorted int64 row indices into the train and the test split.

    ``test`` holds one array per client (possibly empty arrays), or is ``[]`` when no
    test data was given. ``spec`` is the partitioner's :meth:`~partitioners.base.Partitioner.spec`.
    """

    train: list[np.ndarray]
    test: list[np.ndarray]
    spec: dict[str, Any] = field(default_factory=dict)

    @property
    def n_clients(self) -> int:
        return len(self.train)

    def sizes(self, split: str = "train") -> np.ndarray:
        """Number of rows per client in ``split`` ("train" or "test")."""
        parts = self.train if split == "train" else self.test
        return np.array([len(p) for p in parts], dtype=np.int64)
