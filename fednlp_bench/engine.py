"""The in-process FL simulator: one round from pluggable parts.

One round (:meth:`Simulator.run_round`), in order:

1. draw the cohort from (seed, round), the same on every rank, and record it in the state;
2. for each client of this rank's shard: the client runner loads the broadcast into the one
   model in place, the algorithm's client half trains, the runner returns the delta, the update
   postprocessors edit it (client side, in order), the aggregator adds it;
3. one all-reduce of the aggregate and the per-round scalars across ``torchrun`` ranks;
4. the postprocessors edit the summed aggregate (server side, in reverse order), and the
   algorithm's server half turns the mean into new global weights.

Evaluation, progress, tracking and checkpoints are callbacks (:mod:`fednlp_bench.callbacks`);
privacy enters only as update postprocessors and a client-context factory, wired by
:mod:`fednlp_bench.run`. See docs/architecture.md for the layers and data flow.
"""
from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from fednlp_bench.aggregation import Aggregator, WeightedMean
from fednlp_bench.algorithms import Aggregate, Algorithm, ClientResult, PluginError
from fednlp_bench.callbacks import CallbackList
from fednlp_bench.client_runner import choose_runner
from fednlp_bench.errors import RunError
from fednlp_bench.local import LocalTraining
from fednlp_bench.postprocess import Chain, RoundSum, algorithm_chain, plugin_label
from fednlp_bench.sampling import CohortSchedule
from fednlp_bench.state import Cohort, Failure, TrainState, client_seed

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class EngineConfig:
    """What the FL engine needs to know about a run (nothing about data, models or audits)."""

    seed: int = 0
    rounds: int = 10
    clients_per_round: int = 5
    local_epochs: int = 1
    local_steps: int | None = None
    sampler: str = "uniform"
    dropout: float = 0.0
    sparse_embeddings: bool = True

    @classmethod
    def from_run_config(cls, cfg: Any) -> "EngineConfig":
        fl = cfg.fl
        return cls(seed=cfg.seed, rounds=fl.rounds, clients_per_round=fl.clients_per_round,
                   local_epochs=fl.local_epochs, local_steps=fl.local_steps, sampler=fl.sampler,
                   dropout=fl.dropout, sparse_embeddings=fl.sparse_embeddings)


def checked_result(result: Any, alg: Algorithm, spec: str) -> ClientResult:
    """``client_update``'s return value, or a :class:`PluginError` naming the algorithm and the problem.

    ``spec`` is how the user named the algorithm (``--algorithm``).
    """
    label = plugin_label(alg, spec)
    if not isinstance(result, ClientResult):
        raise PluginError(f"algorithm {label}: client_update() must return fednlp_bench.algorithms.ClientResult, "
                          f"got {type(result).__name__}")
    weight = result.weight
    if isinstance(weight, bool) or not isinstance(weight, (int, float)) or not math.isfinite(weight) or weight < 0:
        raise PluginError(f"algorithm {label}: ClientResult.weight must be a finite number >= 0, got {weight!r}")
    if not isinstance(result.extras, dict) or not all(
            isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in result.extras.items()):
        raise PluginError(f"algorithm {label}: ClientResult.extras must be a dict of str -> torch.Tensor")
    return result


class RoundTotals:
    """This rank's running totals of a round besides the aggregated delta."""

    def __init__(self, label: str) -> None:
        self.label = label  # the algorithm, for errors
        self.weight, self.n_ok, self.up_bytes, self.steps = 0.0, 0, 0, 0
        self.extras: dict[str, torch.Tensor] = {}

    def add(self, result: ClientResult) -> None:
        for name, tensor in result.extras.items():
            if name not in self.extras:
                self.extras[name] = torch.zeros_like(tensor)
            elif self.extras[name].shape != tensor.shape:
                raise PluginError(f"algorithm {self.label}: extra '{name}' has shape {tuple(tensor.shape)} for this "
                                  f"client but {tuple(self.extras[name].shape)} for an earlier one")
            self.extras[name].add_(tensor)
            self.up_bytes += tensor.numel() * 4
        self.weight += result.weight
        self.n_ok += 1
        self.steps += result.n_steps

    def all_reduce(self, world: Any, device: torch.device) -> None:
        scalars = torch.tensor([self.weight, float(self.n_ok), float(self.up_bytes), float(self.steps)],
                               dtype=torch.float64, device=device)
        world.all_reduce(scalars)
        for tensor in self.extras.values():
            world.all_reduce(tensor)
        self.weight, self.n_ok, self.up_bytes, self.steps = (float(scalars[0]), int(scalars[1]), int(scalars[2]),
                                                             int(scalars[3]))


class Simulator:
    """Runs FL rounds over prepared client data with one model per worker."""

    def __init__(self, cfg: EngineConfig, local: LocalTraining, clients: Any, algorithm: Algorithm, *,
                 world: Any, postprocessors: Chain | None = None, aggregator: Aggregator | None = None,
                 callbacks: CallbackList | None = None, algorithm_spec: str | None = None) -> None:
        self.cfg, self.local, self.clients, self.algorithm, self.world = cfg, local, clients, algorithm, world
        self.state = local.state
        self.global_params = local.params.detach().clone()
        self.postprocessors = postprocessors if postprocessors is not None else algorithm_chain(algorithm, [])
        self.aggregator = aggregator or WeightedMean()
        self.callbacks = callbacks or CallbackList()
        self.algorithm_spec = algorithm_spec or algorithm.name or type(algorithm).__name__
        self.schedule = CohortSchedule(cfg.sampler, cfg.clients_per_round, cfg.seed, cfg.dropout)
        dense_only = self.postprocessors.dense_only + ([self.aggregator.name] if self.aggregator.dense_only else [])
        if not local.plain_loop:
            dense_only.append("local training loop")
        self.runner = choose_runner(local, self.global_params, enabled=cfg.sparse_embeddings,
                                    rows_exact=algorithm.row_sparse_exact(), dense_only=dense_only)
        self._server_ready = False

    # ---- the worker's model, for callers that need it ---------------------------------
    @property
    def model(self) -> torch.nn.Module:
        return self.local.model

    @property
    def params(self) -> torch.Tensor:
        return self.local.params

    @property
    def grads(self) -> torch.Tensor:
        return self.local.grads

    @property
    def train_data(self):
        return self.local.train_data

    @property
    def client_train(self) -> list[np.ndarray]:
        return self.clients.client_rows

    @property
    def row_sparse(self):
        """The row-sparse client state when that path runs, else None."""
        return getattr(self.runner, "fast", None)

    # ---- one round ------------------------------------------------------------------
    def run_round(self, round: int) -> None:
        cohort = self.schedule.draw(round, self.clients.sizes(round))
        self.state.cohorts.append(cohort)
        if not cohort.sampled:  # continual setting: no client holds data yet
            log.warning("round %d: no client holds any training rows yet; the global model is unchanged", round)
            return
        self.state.costs.dropped_clients += len(cohort.dropped)
        reporting = cohort.reporting
        self.aggregator.start(self.global_params, len(reporting))
        self.runner.start_round()
        totals = RoundTotals(self.label)
        for slot, client in enumerate(reporting):
            if slot % self.world.size == self.world.rank:
                self._train_client(round, client, slot, totals)
        total_sum, denominator = self.aggregator.reduce(self.world)
        totals.all_reduce(self.world, total_sum.device)
        self._check_round(round, len(reporting), totals)
        self._count_bytes(cohort, totals)
        agg = RoundSum(total_sum, denominator or totals.weight, totals.n_ok, round, totals.extras)
        self.postprocessors.server(agg, self.world)
        self._server_step(Aggregate(
            mean_delta=agg.sum.div_(agg.total_weight), extras={k: v.div_(agg.n_clients) for k, v in agg.extras.items()},
            n_clients=agg.n_clients, total_weight=agg.total_weight, round=round))

    @property
    def label(self) -> str:
        return plugin_label(self.algorithm, self.algorithm_spec)

    def _check_round(self, round: int, n_reporting: int, totals: RoundTotals) -> None:
        """Stop when no client survived, or when the survivors trained nothing (a silent no-op round)."""
        if totals.n_ok == 0:
            last = self.state.failures[-1].reason if self.state.failures else "unknown"
            raise RunError(f"round {round}: all {n_reporting} sampled clients failed (last: {last}); stopping")
        if totals.steps == 0:
            raise PluginError(f"algorithm {self.label}: no client took a local step in round {round} "
                              f"(ClientResult.n_steps is 0 for all {totals.n_ok}); a client half that iterates "
                              f"ctx.batches() must still train, e.g. with ctx.train()")

    def _server_step(self, agg: Aggregate) -> None:
        """The algorithm's server half; its errors and non-finite weights name the algorithm."""
        try:
            self.algorithm.server_update(self.global_params, agg)
        except (RuntimeError, ValueError, TypeError, KeyError, IndexError) as exc:
            raise PluginError(f"algorithm {self.label}: server_update() failed in round {agg.round} "
                              f"({exc.__class__.__name__}: {exc})") from exc
        if not torch.isfinite(self.global_params.sum()):
            raise PluginError(f"algorithm {self.label}: server_update() left non-finite global weights in round "
                              f"{agg.round} (NaN or inf)")

    def _train_client(self, round: int, client: int, slot: int, totals: RoundTotals) -> None:
        """One client: load the broadcast, train, post-process, aggregate; a failing client is dropped."""
        cfg, local = self.cfg, self.local
        self.runner.load()
        local.seed(client_seed(cfg.seed, round, client))
        rows = self.clients.rows(client, round)
        schedule = local.schedule(rows, np.random.default_rng([cfg.seed, round, client]), cfg.local_epochs,
                                  cfg.local_steps)
        ctx = local.context(client, round, len(rows), schedule, global_params=self.global_params,
                            **self.runner.context_kwargs())
        t0 = time.perf_counter()
        try:
            with self.runner.training():
                result = checked_result(self.algorithm.client_update(ctx), self.algorithm, self.algorithm_spec)
            update = self.runner.delta()
            if self.postprocessors.links:
                self.postprocessors.client(update.delta, ctx, result)
            update.check_finite()
        except PluginError:
            raise  # a broken plugin is not a failing client
        except Exception as exc:  # noqa: BLE001 - a failing client (NaN, OOM, plugin bug) is dropped
            reason = f"{exc.__class__.__name__}: {exc} ({where(exc)})"
            log.warning("round %d: client %d dropped (%s)", round, client, reason,
                        exc_info=log.isEnabledFor(logging.DEBUG))
            self.state.failures.append(Failure(round, client, reason))
            return
        finally:
            self.state.costs.client_compute_seconds += time.perf_counter() - t0
        self.aggregator.add(update, result.weight, slot)
        totals.add(result)
        self.state.costs.local_steps += result.n_steps

    def _count_bytes(self, cohort: Cohort, totals: RoundTotals) -> None:
        """Down: the weights (and extra broadcast vectors) to every sampled client; up: each survivor's
        delta and extras (fp32)."""
        numel_bytes = self.global_params.numel() * 4
        self.state.costs.bytes_down += len(cohort.sampled) * numel_bytes * (1 + self.algorithm.extra_broadcast_vectors)
        self.state.costs.bytes_up += totals.n_ok * numel_bytes + totals.up_bytes

    # ---- the whole run ---------------------------------------------------------------
    def start_server(self) -> None:
        """The algorithm's server state, once (a checkpoint's state was loaded into it before)."""
        if not self._server_ready:
            self.algorithm.n_clients = len(self.clients.client_rows)
            self.algorithm.init_server(self.global_params)
            self._server_ready = True

    def run_federated(self) -> None:
        """Every remaining round, with the callbacks around them."""
        self.start_server()
        self.callbacks.run_start(self)
        for round in range(self.state.round + 1, self.cfg.rounds + 1):
            t0 = time.perf_counter()
            self.run_round(round)
            self.state.costs.train_seconds += time.perf_counter() - t0
            self.state.round = round
            self.callbacks.round_end(self, round)
        self.callbacks.run_end(self)

    # ---- checkpoints ----------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        return {"global_params": self.global_params, "train": self.state.state_dict(),
                "clients": self.clients.state_dict(), "algorithm": self.algorithm.state_dict(),
                "postprocessors": self.postprocessors.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Continue after ``state``'s round: weights, progress, algorithm and postprocessor state."""
        self.global_params.copy_(state["global_params"])
        self.local.params.copy_(self.global_params)
        self.state.load_state_dict(state["train"])
        self.clients.load_state_dict(state.get("clients", {}))
        self.start_server()
        self.algorithm.load_state_dict(state["algorithm"])
        self.postprocessors.load_state_dict(state.get("postprocessors", {}))


def where(exc: BaseException) -> str:
    """``file:line in function`` of the innermost frame an exception passed through."""
    import traceback

    frames = traceback.extract_tb(exc.__traceback__)
    if not frames:
        return "no traceback"
    f = frames[-1]
    return f"at {f.filename}:{f.lineno} in {f.name}"


def reduce_costs(state: TrainState, world: Any, device: torch.device) -> None:
    """Sum per-rank client costs over ranks (call on every rank once training is done)."""
    c = state.costs
    fields = ("client_compute_seconds", "train_examples", "train_tokens", "padded_tokens", "local_steps")
    if world.size == 1:
        return
    t = torch.tensor([float(getattr(c, f)) for f in fields], dtype=torch.float64, device=device)
    world.all_reduce(t)
    for f, v in zip(fields, t.tolist()):
        setattr(c, f, v if f == "client_compute_seconds" else int(v))
