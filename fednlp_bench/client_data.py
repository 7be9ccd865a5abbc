"""Which rows each client holds in each round: the same rows every round, or data arriving over time.

The engine only asks ``sizes(round)`` (for the sampler) and ``rows(client, round)`` (for local
training), so the continual setting (:mod:`fednlp_bench.continual`) replaces
:class:`StaticClients` without touching the round loop.
"""
from __future__ import annotations

from typing import Any

import numpy as np

from fednlp_bench.continual import ContinualClients


class StaticClients:
    """Each client holds the same rows in every round (the usual FL simulation)."""

    def __init__(self, client_rows: list[np.ndarray]) -> None:
        self.client_rows = client_rows
        self._sizes = np.array([len(r) for r in client_rows], dtype=np.int64)

    def sizes(self, round: int) -> np.ndarray:
        return self._sizes

    def rows(self, client: int, round: int) -> np.ndarray:
        return self.client_rows[client]

    def describe(self) -> dict[str, Any]:
        return {"setting": "static"}

    def state_dict(self) -> dict:
        return {}

    def load_state_dict(self, state: dict) -> None:
        pass


def client_data(fl: Any, client_rows: list[np.ndarray], seed: int) -> StaticClients | ContinualClients:
    """The view ``fl`` (an ``FLConfig``) asks for."""
    return ContinualClients.from_config(fl, client_rows, seed) if fl.continual else StaticClients(client_rows)
