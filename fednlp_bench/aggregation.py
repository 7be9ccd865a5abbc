"""Aggregators: how the round's client deltas become one vector for the server step.

The default, :class:`WeightedMean`, is FedAvg's running weighted sum in one flat fp32 buffer
(memory O(model), not O(clients x model); performance rule 2): each update is added as it
arrives, ranks combine with one all-reduce, and the engine divides by the total weight.

Robust aggregators cannot be a running sum. :class:`TrimmedMean` and :class:`CoordinateMedian`
(Yin, Chen, Ramchandran & Bartlett 2018, "Byzantine-Robust Distributed Learning: Towards Optimal
Statistical Rates") keep every update of the round in a (cohort x model) matrix, so they cost
O(clients x model) memory, and weigh clients equally (weights are ignored, as in the paper).
Under ``torchrun`` each rank fills the rows of its own clients and one all-reduce of the matrix
gives every rank all of them. Select with ``--set fl.aggregator=trimmed_mean``
(``fl.trim_fraction``) or ``fl.aggregator=median``.
"""
from __future__ import annotations

import math
from typing import Any

import torch

from fednlp_bench.client_runner import ClientUpdate
from fednlp_bench.errors import ConfigError, RunError


class Aggregator:
    """Interface: :meth:`start` a round, :meth:`add` each client, :meth:`reduce` across ranks.

    ``reduce`` returns ``(vector, denominator)``: the server's mean is ``vector / denominator``;
    ``denominator=None`` means the clients' total weight (a weighted mean).
    """

    name = "aggregator"
    dense_only = False  # True: needs each client's full delta (no row-sparse updates)

    def start(self, like: torch.Tensor, cohort_size: int) -> None:
        raise NotImplementedError

    def add(self, update: ClientUpdate, weight: float, slot: int) -> None:
        raise NotImplementedError

    def reduce(self, world: Any) -> tuple[torch.Tensor, float | None]:
        raise NotImplementedError


class WeightedMean(Aggregator):
    """FedAvg's weighted mean as a running sum (the default)."""

    name = "mean"

    def start(self, like: torch.Tensor, cohort_size: int) -> None:
        self.total = torch.zeros_like(like)

    def add(self, update: ClientUpdate, weight: float, slot: int) -> None:
        update.add_to(self.total, weight)

    def reduce(self, world: Any) -> tuple[torch.Tensor, float | None]:
        world.all_reduce(self.total)
        return self.total, None


class _Coordinatewise(Aggregator):
    """Keeps every update of the round; subclasses combine them coordinate by coordinate."""

    dense_only = True

    def start(self, like: torch.Tensor, cohort_size: int) -> None:
        self.rows = torch.zeros((cohort_size, like.numel()), dtype=like.dtype, device=like.device)
        self.filled = torch.zeros(cohort_size, dtype=like.dtype, device=like.device)

    def add(self, update: ClientUpdate, weight: float, slot: int) -> None:
        self.rows[slot].copy_(update.delta)
        self.filled[slot] = 1.0

    def reduce(self, world: Any) -> tuple[torch.Tensor, float | None]:
        world.all_reduce(self.rows)
        world.all_reduce(self.filled)
        rows = self.rows[self.filled > 0]
        if len(rows) == 0:
            raise RunError(f"aggregator '{self.name}': no client update to aggregate")
        out = self.combine(torch.sort(rows, dim=0).values)
        del self.rows
        return out, 1.0

    def combine(self, ordered: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError


class TrimmedMean(_Coordinatewise):
    """Per coordinate, drop the ``floor(beta n)`` largest and smallest values and average the rest."""

    name = "trimmed_mean"

    def __init__(self, trim_fraction: float) -> None:
        if not 0.0 <= trim_fraction < 0.5:
            raise ConfigError(f"fl.trim_fraction must be in [0, 0.5), got {trim_fraction!r}")
        self.beta = trim_fraction

    def combine(self, ordered: torch.Tensor) -> torch.Tensor:
        n = ordered.shape[0]
        k = math.floor(self.beta * n)
        return ordered[k : n - k].mean(dim=0)


class CoordinateMedian(_Coordinatewise):
    """Per coordinate, the median (the mean of the two middle values for an even count)."""

    name = "median"

    def combine(self, ordered: torch.Tensor) -> torch.Tensor:
        n = ordered.shape[0]
        if n % 2:
            return ordered[n // 2].clone()
        return (ordered[n // 2 - 1] + ordered[n // 2]) / 2


AGGREGATORS = ("mean", "trimmed_mean", "median")


def make_aggregator(name: str, trim_fraction: float = 0.1) -> Aggregator:
    if name == "mean":
        return WeightedMean()
    if name == "trimmed_mean":
        return TrimmedMean(trim_fraction)
    if name == "median":
        return CoordinateMedian()
    raise ConfigError(f"fl.aggregator must be one of {', '.join(AGGREGATORS)}, got {name!r}")
