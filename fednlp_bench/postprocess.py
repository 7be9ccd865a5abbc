"""Update postprocessors: cross-cutting changes to client updates, in one chain.

A postprocessor sees every client update on the client side (:meth:`UpdatePostprocessor.client`,
in chain order) and the round's summed aggregate on the server side
(:meth:`UpdatePostprocessor.server`, in *reverse* chain order, after the all-reduce), like
pfl-research's postprocessors. The algorithm's own ``process_update`` is the first link;
user-level DP clipping and noise (:mod:`fednlp_bench.privacy.user_level`) is another; compression
or anything else is one more class. The round loop never names them.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch

from fednlp_bench.algorithms.base import Algorithm, ClientContext, ClientResult
from fednlp_bench.errors import PluginError


def plugin_label(alg: Algorithm, spec: str | None = None) -> str:
    """How errors name an algorithm: ``'spec' (module.Class)``."""
    cls = type(alg)
    return f"'{spec or alg.name or cls.__name__}' ({cls.__module__}.{cls.__qualname__})"


@dataclass
class RoundSum:
    """The all-reduced aggregate of a round before the server step: sums, not means.

    ``total_weight`` is the denominator of the weighted mean (a server postprocessor may fix it,
    as DP-FedAvg does); ``extras`` are summed per name and averaged over ``n_clients``.
    """

    sum: torch.Tensor
    total_weight: float
    n_clients: int
    round: int
    extras: dict[str, torch.Tensor] = field(default_factory=dict)


class UpdatePostprocessor:
    """Base class: both sides do nothing. ``dense_only`` = needs the full delta tensor."""

    name = "postprocessor"
    dense_only = True

    def client(self, delta: torch.Tensor, ctx: ClientContext, result: ClientResult) -> None:
        """Edit one client's ``delta`` in place (and ``result.weight`` if needed)."""

    def server(self, agg: RoundSum, world: Any) -> None:
        """Edit the round's summed aggregate in place (noise, fixed denominator...)."""

    def state_dict(self) -> dict[str, Any]:
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        pass


class AlgorithmUpdates(UpdatePostprocessor):
    """The algorithm's ``process_update`` hook as the first link of the chain."""

    name = "algorithm"

    def __init__(self, algorithm: Algorithm) -> None:
        self.algorithm = algorithm

    def client(self, delta: torch.Tensor, ctx: ClientContext, result: ClientResult) -> None:
        """The hook edits ``delta`` in place; a returned tensor of the same shape replaces it."""
        out = self.algorithm.process_update(delta, ctx, result)
        if out is None or out is delta:
            return
        label = plugin_label(self.algorithm)
        if not isinstance(out, torch.Tensor):
            raise PluginError(f"algorithm {label}: process_update() must edit delta in place and return None (or "
                              f"return the new delta as a tensor), got {type(out).__name__}")
        if out.shape != delta.shape:
            raise PluginError(f"algorithm {label}: process_update() returned a tensor of shape {tuple(out.shape)}, "
                              f"the delta has shape {tuple(delta.shape)}")
        delta.copy_(out)


class Chain:
    """Postprocessors applied client-side in order and server-side in reverse order."""

    def __init__(self, links: list[UpdatePostprocessor]) -> None:
        self.links = links

    @property
    def dense_only(self) -> list[str]:
        return [p.name for p in self.links if p.dense_only]

    def client(self, delta: torch.Tensor, ctx: ClientContext, result: ClientResult) -> None:
        for p in self.links:
            p.client(delta, ctx, result)

    def server(self, agg: RoundSum, world: Any) -> None:
        for p in reversed(self.links):
            p.server(agg, world)

    def state_dict(self) -> dict[str, Any]:
        return {p.name: p.state_dict() for p in self.links}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        for p in self.links:
            p.load_state_dict(state.get(p.name, {}))


def algorithm_chain(algorithm: Algorithm, extra: list[UpdatePostprocessor]) -> Chain:
    """The algorithm's own link (only if it overrides ``process_update``) followed by ``extra``."""
    own = [AlgorithmUpdates(algorithm)] if type(algorithm).process_update is not Algorithm.process_update else []
    return Chain(own + list(extra))
