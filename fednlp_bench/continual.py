"""Continual setting: client data arrive over rounds and each client stores at most a cap.

Real devices do not hold their whole history at round 1: new examples arrive
(messages typed, pages read) and old ones are deleted when storage is full.
:class:`ContinualClients` replaces the engine's ``StaticClients`` view:

* each client's rows are revealed in a fixed order - ``chronological`` (the
  partition's row order, i.e. dataset order) or ``random`` (a seeded
  permutation per client);
* by round ``r`` (1-based) a client has received ``floor(r * rate)`` rows
  (``arrival = "fixed"``) or a cumulative Poisson(``rate``) count per round
  (``arrival = "poisson"``), never more than it owns;
* it keeps only the newest ``storage_cap`` of them (oldest deleted first);
  ``storage_cap = None`` keeps everything.

The view is a pure function of (seed, round), so it needs no checkpoint state
and is the same on every rank. Samplers see ``sizes(round)``, the rows a client
holds *now*, so ``activity`` sampling weighs clients by their current storage.

Select it with ``--set fl.continual=true --set fl.arrival_per_round=10
--set fl.storage_cap=50`` (``fl.arrival=poisson``, ``fl.arrival_order=random``).
"""
from __future__ import annotations

from typing import Any

import numpy as np

ARRIVALS = ("fixed", "poisson")
ORDERS = ("chronological", "random")


class ContinualClients:
    """Time-varying client view: ``sizes(round)`` and ``rows(client, round)`` as in ``StaticClients``."""

    def __init__(
        self,
        client_rows: list[np.ndarray],
        *,
        rate: float,
        rounds: int,
        rng: np.random.Generator,
        storage_cap: int | None = None,
        arrival: str = "fixed",
        order: str = "chronological",
    ) -> None:
        if arrival not in ARRIVALS:
            raise ValueError(f"arrival must be one of {', '.join(ARRIVALS)}, got {arrival!r}")
        if order not in ORDERS:
            raise ValueError(f"arrival order must be one of {', '.join(ORDERS)}, got {order!r}")
        if not rate > 0:
            raise ValueError(f"arrival rate must be > 0, got {rate!r}")
        if storage_cap is not None and storage_cap < 1:
            raise ValueError(f"storage cap must be >= 1 or None, got {storage_cap!r}")
        self.rate, self.storage_cap, self.arrival, self.order = rate, storage_cap, arrival, order
        self.client_rows = client_rows  # each client's whole share, as partitioned
        self.rounds = rounds
        self.stream = [np.asarray(r) if order == "chronological" else rng.permutation(np.asarray(r))
                       for r in client_rows]
        owned = np.array([len(r) for r in client_rows], dtype=np.int64)
        steps = np.arange(rounds + 1, dtype=np.float64)
        if arrival == "fixed":
            arrived = np.floor(np.outer(np.ones(len(owned)), steps) * rate).astype(np.int64)
        else:
            counts = rng.poisson(rate, size=(len(owned), rounds))
            arrived = np.concatenate([np.zeros((len(owned), 1), np.int64), np.cumsum(counts, axis=1)], axis=1)
        #: rows received by the end of round r, shape (clients, rounds + 1); column 0 is "before round 1"
        self.arrived = np.minimum(arrived, owned[:, None])

    @classmethod
    def from_config(cls, fl: Any, client_rows: list[np.ndarray], seed: int) -> "ContinualClients":
        """Build from an ``FLConfig`` with ``continual=True``; the RNG derives from ``seed``."""
        return cls(client_rows, rate=float(fl.arrival_per_round), rounds=fl.rounds,
                   rng=np.random.default_rng([seed, 0xC047]), storage_cap=fl.storage_cap,
                   arrival=fl.arrival, order=fl.arrival_order)

    def _window(self, round: int) -> tuple[np.ndarray, np.ndarray]:
        arrived = self.arrived[:, min(max(round, 0), self.rounds)]
        if self.storage_cap is None:
            return np.zeros_like(arrived), arrived
        return np.maximum(arrived - self.storage_cap, 0), arrived

    def sizes(self, round: int) -> np.ndarray:
        """Rows each client holds during ``round``."""
        start, end = self._window(round)
        return end - start

    def rows(self, client: int, round: int) -> np.ndarray:
        """The rows client ``client`` holds during ``round``, oldest first."""
        start, end = self._window(round)
        return self.stream[client][start[client] : end[client]]

    def describe(self) -> dict[str, Any]:
        return {"setting": "continual", "arrival": self.arrival, "arrival_per_round": self.rate,
                "arrival_order": self.order, "storage_cap": self.storage_cap}

    def state_dict(self) -> dict:
        return {}

    def load_state_dict(self, state: dict) -> None:
        pass
