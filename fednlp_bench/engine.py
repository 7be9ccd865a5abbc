"""The in-process FL simulator (ARCHITECTURE.md "Engine" and performance rules 1-6).

One round, in order:

1. sample the cohort from (seed, round) - independent of ranks;
2. for each client of this rank's shard: load the global weights into the one
   model in place, run the algorithm's client half, subtract the broadcast to
   get the delta, let the algorithm post-process it, add it to a running
   weighted sum (flat fp32, O(model) memory);
3. all-reduce the sums when running under ``torchrun``;
4. the algorithm's server half turns the weighted mean delta into new weights;
5. evaluate every ``eval_every`` rounds on the global test set (one inference
   pass under ``torch.inference_mode``, large length-sorted batches).

Per-client test metrics come from one pass over the whole test set at the end,
scored on each client's test rows.
"""
from __future__ import annotations

import contextlib
import logging
import math
import os
import time
from dataclasses import dataclass, field
from typing import Any, Iterator

import numpy as np
import torch

from fednlp_bench import sampling
from fednlp_bench.algorithms import Aggregate, Algorithm, ClientContext, ClientResult, PluginError
from fednlp_bench.batching import TokenizedData, length_grouped_batches
from fednlp_bench.config import RunConfig
from fednlp_bench.continual import ContinualClients
from fednlp_bench.errors import RunError  # noqa: F401 - re-exported
from fednlp_bench.sparse_rows import RowSparseClient, eligible_tables

log = logging.getLogger(__name__)


# --------------------------------------------------------------------------- model plumbing
def flatten_model(model: torch.nn.Module) -> tuple[torch.Tensor, torch.Tensor]:
    """Make every trainable parameter (and its ``.grad``) a view into one flat fp32 buffer.

    Returns ``(params, grads)``. Loading weights is then ``params.copy_(w)``;
    autograd accumulates into the existing ``.grad`` views in place.
    """
    trainable = [p for p in model.parameters() if p.requires_grad]
    total = sum(p.numel() for p in trainable)
    device = trainable[0].device
    params = torch.empty(total, dtype=torch.float32, device=device)
    grads = torch.zeros(total, dtype=torch.float32, device=device)
    offset = 0
    for p in trainable:
        n = p.numel()
        params[offset : offset + n].copy_(p.data.reshape(-1))
        p.data = params[offset : offset + n].view_as(p)
        p.grad = grads[offset : offset + n].view_as(p)
        offset += n
    return params, grads


def pick_device(name: str) -> torch.device:
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
        return torch.device("cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise RunError(f"device must be auto, cpu, cuda or cuda:N, got {name!r}") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise RunError(f"device {name!r} requested but CUDA is not available (use --device cpu)")
    return device


def autocast_factory(device: torch.device):
    """bf16 autocast on GPUs that support it, nothing on CPU."""
    if device.type == "cuda" and torch.cuda.is_bf16_supported():
        return lambda: torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext


# --------------------------------------------------------------------------- distributed
@dataclass
class World:
    rank: int = 0
    size: int = 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @classmethod
    def current(cls) -> "World":
        import torch.distributed as dist

        if dist.is_available() and dist.is_initialized():
            return cls(dist.get_rank(), dist.get_world_size())
        return cls()

    @classmethod
    def init_from_env(cls) -> "World":
        """Join the process group when started by ``torchrun`` (WORLD_SIZE > 1); gloo on CPU, NCCL on GPU."""
        import torch.distributed as dist

        if int(os.environ.get("WORLD_SIZE", "1")) > 1 and dist.is_available() and not dist.is_initialized():
            if torch.cuda.is_available():
                torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
                dist.init_process_group("nccl")
            else:
                dist.init_process_group("gloo")
        return cls.current()

    def all_reduce(self, tensor: torch.Tensor) -> None:
        if self.size > 1:
            import torch.distributed as dist

            dist.all_reduce(tensor)


# --------------------------------------------------------------------------- client data over time
class StaticClients:
    """Each client holds the same rows in every round (the usual FL simulation).

    The engine only asks ``sizes(round)`` (for the sampler) and ``rows(client,
    round)`` (for local training), so a time-varying view such as the continual
    setting can replace it without touching the round loop.
    """

    def __init__(self, client_rows: list[np.ndarray]) -> None:
        self.client_rows = client_rows
        self._sizes = np.array([len(r) for r in client_rows], dtype=np.int64)

    def sizes(self, round: int) -> np.ndarray:
        return self._sizes

    def rows(self, client: int, round: int) -> np.ndarray:
        return self.client_rows[client]

    def state_dict(self) -> dict:
        return {}

    def load_state_dict(self, state: dict) -> None:
        pass


# --------------------------------------------------------------------------- bookkeeping
@dataclass
class Costs:
    client_compute_seconds: float = 0.0
    train_seconds: float = 0.0  # wall time of the round loops, evaluation excluded
    eval_seconds: float = 0.0
    bytes_up: int = 0
    bytes_down: int = 0
    train_examples: int = 0
    train_tokens: int = 0
    padded_tokens: int = 0
    local_steps: int = 0
    dropped_clients: int = 0  # sampled clients that failed to report (fl.dropout)


@dataclass
class Failure:
    round: int
    client: int
    reason: str


@dataclass
class TrainState:
    """Everything that changes over rounds (what a checkpoint must hold)."""

    round: int = 0
    per_round: list[dict[str, Any]] = field(default_factory=list)
    failures: list[Failure] = field(default_factory=list)
    costs: Costs = field(default_factory=Costs)


def client_seed(seed: int, round: int, client: int) -> int:
    """Torch seed of one client's local training (dropout), independent of ranks."""
    return int(np.random.SeedSequence([seed, round, client, 0xC11E]).generate_state(1)[0])


def checked_result(result: Any, alg: Algorithm, spec: str) -> ClientResult:
    """``client_update``'s return value, or a :class:`PluginError` naming the algorithm and the problem.

    ``spec`` is how the user named the algorithm (``--algorithm``).
    """
    cls = type(alg)
    label = f"'{spec}' ({cls.__module__}.{cls.__qualname__})"
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


# --------------------------------------------------------------------------- simulator
class Simulator:
    """Runs FL rounds (or the centralized baseline) over prepared data with one model."""

    def __init__(
        self,
        cfg: RunConfig,
        task,
        model: torch.nn.Module,
        train: TokenizedData,
        test: TokenizedData,
        client_train: list[np.ndarray],
        client_test: list[np.ndarray],
        algorithm: Algorithm | None,
        pad_id: int,
        device: torch.device,
        world: World | None = None,
        on_eval=None,
        on_round=None,
        privacy=None,
    ) -> None:
        self.cfg = cfg
        self.task = task
        self.model = model.to(device)
        self.train_data = train
        self.test_data = test
        self.client_train = client_train
        self.client_test = client_test
        self.clients = (ContinualClients.from_config(cfg.fl, client_train, cfg.seed) if cfg.fl.continual
                        else StaticClients(client_train))
        self.algorithm = algorithm
        self.pad_id = pad_id
        self.device = device
        self.world = world or World.current()
        self.on_eval = on_eval
        self.on_round = on_round
        self.privacy = privacy  # privacy: fednlp_bench.privacy.runtime.PrivacyRuntime or None
        self.autocast = autocast_factory(device)
        self.params, self.grads = flatten_model(self.model)
        self.global_params = self.params.detach().clone()
        self.state = TrainState()
        self.test_rows = np.arange(len(test))
        self._central_optimizer: torch.optim.Optimizer | None = None
        self._client_optimizer: torch.optim.Optimizer | None = None
        self._optimizer_defaults: list[dict] = []  # the client optimiser's param-group settings as built
        self._optimizer_state: dict | None = None
        self._restored_algorithm_state: dict | None = None
        self.row_sparse: RowSparseClient | None = self._row_sparse_client()

    def _row_sparse_client(self) -> RowSparseClient | None:
        """The exact row-sparse client path (fednlp_bench/sparse_rows.py) where it applies, else None.

        It applies when the client half is the base one (FedAvg, the FedOpt family: no loss, step,
        update or client_update hook), without DP, with AdamW at weight decay 0 (a fresh AdamW per
        client then leaves rows nobody looked up exactly unchanged), to embedding tables of at least
        ``sparse_rows.MIN_ROWS`` rows that no other module shares.
        """
        alg = self.algorithm
        if not self.cfg.fl.sparse_embeddings or alg is None or self.privacy is not None:
            return None
        if self.cfg.fl.weight_decay != 0.0:
            return None
        hooks = ("client_update", "client_loss", "after_client_step", "process_update")
        if any(getattr(type(alg), h) is not getattr(Algorithm, h) for h in hooks):
            return None
        tables = eligible_tables(self.model)
        if not tables:
            return None
        opt = self._new_optimizer()
        if type(opt) is not torch.optim.AdamW or opt.defaults.get("amsgrad"):
            return None
        hparams = {k: v for k, v in opt.defaults.items() if k != "params"}
        fast = RowSparseClient(self.params, self.grads, self.global_params, tables, hparams)
        log.info("row-sparse client updates for %d embedding table(s), %d of %d trainable parameters",
                 len(tables), fast.n_sparse_parameters, self.params.numel())
        return fast

    def _seed(self, seed: int) -> None:
        """Seed the generators local training draws from (dropout): the CPU one, and the model's
        GPU when it has one. What ``torch.manual_seed`` does for these, without its per-call
        lazy-initialisation bookkeeping for every other accelerator type (~0.4 ms a call)."""
        torch.default_generator.manual_seed(seed)
        if self.device.type == "cuda":
            with torch.cuda.device(self.device):
                torch.cuda.manual_seed(seed)

    # ---- data ---------------------------------------------------------------
    def _to_device(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        if self.device.type == "cuda":
            return {k: v.pin_memory().to(self.device, non_blocking=True) for k, v in batch.items()}
        return batch

    def _schedule(self, rows: np.ndarray, rng: np.random.Generator, epochs: int, steps: int | None) -> Iterator[np.ndarray]:
        """Row batches of a local schedule: ``epochs`` passes, or exactly ``steps`` batches."""
        bs = self.cfg.fl.batch_size
        lengths = self.train_data.lengths
        if len(rows) == 0:
            return
        done = 0
        epoch = 0
        while True:
            for b in length_grouped_batches(rows, lengths, bs, rng):
                if steps is not None and done >= steps:
                    return
                yield b
                done += 1
            epoch += 1
            if steps is None and epoch >= epochs:
                return

    def _batches(self, row_batches: Iterator[np.ndarray]) -> Iterator[dict[str, torch.Tensor]]:
        costs = self.state.costs
        lengths = self.train_data.lengths
        for rows in row_batches:
            lens = lengths[rows]
            costs.train_examples += len(rows)
            costs.train_tokens += int(lens.sum())
            costs.padded_tokens += int(lens.max()) * len(rows)
            yield self._to_device(self.task.collate(self.train_data, rows, self.pad_id))

    def _new_optimizer(self) -> torch.optim.Optimizer:
        """AdamW over the trainable parameters; the fused kernel (one pass over each tensor,
        CPU and CUDA) when the parameters are float32 on such a device: 3-4x faster per step than
        the per-tensor loop torch uses on CPU by default, a large share of a short local update."""
        trainable = [p for p in self.model.parameters() if p.requires_grad]
        kwargs = {"lr": self.cfg.fl.client_lr, "weight_decay": self.cfg.fl.weight_decay}
        if self.device.type in ("cpu", "cuda") and all(p.dtype == torch.float32 for p in trainable):
            kwargs["fused"] = True
        return torch.optim.AdamW(trainable, **kwargs)

    def _optimizer(self) -> torch.optim.Optimizer:
        """The worker's client optimiser in the state of a freshly built AdamW.

        Built once; for each later client its moments and step counters are zeroed in
        place and its hyper-parameters restored, which is numerically a new AdamW but
        does not allocate (and page-fault) two model-sized buffers per client.
        """
        opt = self._client_optimizer
        if opt is None:
            opt = self._client_optimizer = self._new_optimizer()
            self._optimizer_defaults = [dict((k, v) for k, v in g.items() if k != "params") for g in opt.param_groups]
            return opt
        for group, defaults in zip(opt.param_groups, self._optimizer_defaults):
            group.update(defaults)
        for state in opt.state.values():
            for value in state.values():
                if torch.is_tensor(value):
                    value.zero_()
        return opt

    def _context(self, client: int, round: int, n_examples: int, row_batches: Iterator[np.ndarray],
                 make_optimizer, **extra) -> ClientContext:
        make = ClientContext if self.privacy is None else self.privacy.make_context  # privacy: DP-SGD context
        return make(
            **extra,
            model=self.model,
            params=self.params,
            grads=self.grads,
            global_params=self.global_params,
            client_id=client,
            round=round,
            n_examples=n_examples,
            batches=lambda: self._batches(row_batches),
            make_optimizer=make_optimizer,
            autocast=self.autocast,
        )

    # ---- evaluation -----------------------------------------------------------
    def predict_test(self) -> dict[int, Any]:
        self.params.copy_(self.global_params)
        return self.task.predict(
            self.model, self.test_data, self.test_rows, self.cfg.fl.eval_batch_size, self.pad_id, self.device
        )

    def evaluate(self, round: int) -> dict[str, Any]:
        t0 = time.perf_counter()
        preds = self.predict_test()
        metrics = self.task.score(preds, self.test_data, self.test_rows)
        self.state.costs.eval_seconds += time.perf_counter() - t0
        row = {"round": round, **metrics}
        if self.on_eval is not None:
            self.on_eval(row)
        return row

    def per_client_metrics(self) -> tuple[dict[str, Any], dict[str, float]]:
        """Final global metrics and per-client metrics from one inference pass."""
        t0 = time.perf_counter()
        preds = self.predict_test()
        final = self.task.score(preds, self.test_data, self.test_rows)
        per_client = {}
        for cid, rows in enumerate(self.client_test):
            if len(rows):
                per_client[str(cid)] = {**self.task.score(preds, self.test_data, rows), "n_test": int(len(rows))}
        self.state.costs.eval_seconds += time.perf_counter() - t0
        return final, per_client

    # ---- federated rounds -------------------------------------------------------
    def run_round(self, round: int) -> None:
        cfg, alg, world = self.cfg, self.algorithm, self.world
        # 1. cohort from (seed, round), the same on every rank
        sizes = self.clients.sizes(round)
        sampled = sampling.sample(cfg.fl.sampler, round, sizes, cfg.fl.clients_per_round,
                                  sampling.round_rng(cfg.seed, round))
        if len(sampled) == 0:  # continual setting: no client holds data yet
            log.warning("round %d: no client holds any training rows yet; the global model is unchanged", round)
            return
        cohort, dropped = sampling.drop_out(sampled, cfg.fl.dropout, sampling.dropout_rng(cfg.seed, round))
        self.state.costs.dropped_clients += len(dropped)
        mine = cohort[world.rank :: world.size]
        agg_sum = torch.zeros_like(self.global_params)
        fast = self.row_sparse  # exact row-sparse client path, or None (dense)
        delta = torch.empty_like(self.global_params) if fast is None else None
        if fast is not None:
            fast.start_round()
        extras_sum: dict[str, torch.Tensor] = {}
        total_weight, n_ok, up_bytes = 0.0, 0, 0
        numel_bytes = self.global_params.numel() * 4
        # 2. clients of this rank, one after the other on the one model
        for client in mine.tolist():
            if fast is None:
                self.params.copy_(self.global_params)
            else:
                fast.start_client()  # the same state, restoring only what the last client changed
            self._seed(client_seed(cfg.seed, round, client))
            rng = np.random.default_rng([cfg.seed, round, client])
            local_rows = self.clients.rows(client, round)
            rows = self._schedule(local_rows, rng, cfg.fl.local_epochs, cfg.fl.local_steps)
            if fast is None:
                ctx = self._context(client, round, len(local_rows), rows, self._optimizer)
            else:
                ctx = self._context(client, round, len(local_rows), rows, lambda: fast, zero_grad=fast.zero_grad)
            t0 = time.perf_counter()
            try:
                if fast is not None:
                    with fast.active():
                        result = checked_result(alg.client_update(ctx), alg, cfg.algorithm.name)
                    parts = fast.delta()  # raises on a non-finite update
                else:
                    result = checked_result(alg.client_update(ctx), alg, cfg.algorithm.name)
                    torch.sub(self.params, self.global_params, out=delta)
                    alg.process_update(delta, ctx, result)
                    if self.privacy is not None:  # privacy: user-level clipping, equal weights
                        self.privacy.process_client(delta, ctx, result)
                    if not torch.isfinite(delta.sum()):  # one reduction, no model-sized bool mask
                        raise FloatingPointError("non-finite model update")
            except PluginError:
                raise  # a broken plugin is not a failing client
            except Exception as exc:  # noqa: BLE001 - a failing client (NaN, OOM, plugin bug) is dropped
                reason = f"{exc.__class__.__name__}: {exc}"
                log.warning("round %d: client %d dropped (%s)", round, client, reason)
                self.state.failures.append(Failure(round, client, reason))
                continue
            finally:
                self.state.costs.client_compute_seconds += time.perf_counter() - t0
            if fast is None:
                agg_sum.add_(delta, alpha=result.weight)
            else:
                fast.add_to(agg_sum, parts, result.weight)
            for name, tensor in result.extras.items():
                if name not in extras_sum:
                    extras_sum[name] = torch.zeros_like(tensor)
                extras_sum[name].add_(tensor)
                up_bytes += tensor.numel() * 4
            total_weight += result.weight
            n_ok += 1
            self.state.costs.local_steps += result.n_steps
        # 3. one all-reduce of the sums across ranks
        scalars = torch.tensor([total_weight, float(n_ok), float(up_bytes)], dtype=torch.float64,
                               device=agg_sum.device)
        world.all_reduce(agg_sum)
        world.all_reduce(scalars)
        for tensor in extras_sum.values():
            world.all_reduce(tensor)
        total_weight, n_ok, up_bytes = float(scalars[0]), int(scalars[1]), int(scalars[2])
        if n_ok == 0:
            last = self.state.failures[-1].reason if self.state.failures else "unknown"
            raise RunError(f"round {round}: all {len(cohort)} sampled clients failed (last: {last}); stopping")
        self.state.costs.bytes_down += len(sampled) * numel_bytes * (1 + alg.extra_broadcast_vectors)
        self.state.costs.bytes_up += n_ok * numel_bytes + up_bytes
        # 4. server half
        if self.privacy is not None:  # privacy: server noise; DP-FedAvg's fixed denominator
            total_weight = self.privacy.finalize_round(agg_sum, round, n_ok, world) or total_weight
        agg = Aggregate(
            mean_delta=agg_sum.div_(total_weight),
            extras={k: v.div_(n_ok) for k, v in extras_sum.items()},
            n_clients=n_ok,
            total_weight=total_weight,
            round=round,
        )
        alg.server_update(self.global_params, agg)

    # ---- centralized baseline -----------------------------------------------------
    def centralized_plan(self) -> list[int]:
        """Optimiser steps per round-segment: the same total example passes as the FL run."""
        fl = self.cfg.fl
        if fl.local_steps is not None:
            total_steps = fl.rounds * fl.clients_per_round * fl.local_steps
        else:
            n_clients = max(self.cfg.partition.n_clients, 1)
            passes = fl.rounds * fl.clients_per_round * fl.local_epochs * len(self.train_data) / n_clients
            total_steps = max(1, math.ceil(passes / fl.batch_size))
        return [len(chunk) for chunk in np.array_split(np.arange(total_steps), fl.rounds)]

    def run_centralized(self) -> None:
        """One continuous AdamW run over all training rows, cut into round-sized segments."""
        cfg = self.cfg
        plan = self.centralized_plan()
        optimizer = self._new_optimizer()
        if self._optimizer_state is not None:
            optimizer.load_state_dict(self._optimizer_state)
        self._central_optimizer = optimizer
        all_rows = np.arange(len(self.train_data))
        rng = np.random.default_rng([cfg.seed, 0xCE17])
        stream = self._schedule(all_rows, rng, epochs=1, steps=sum(plan))
        for _ in range(sum(plan[: self.state.round])):  # resume: skip the batches already consumed
            next(stream)
        self.params.copy_(self.global_params)
        for round in range(self.state.round + 1, cfg.fl.rounds + 1):
            self._seed(client_seed(cfg.seed, round, 0))
            segment = (next(stream) for _ in range(plan[round - 1]))
            ctx = self._context(0, round, len(all_rows), segment, lambda: optimizer)
            t0 = time.perf_counter()
            steps, _ = ctx.train()
            self.state.costs.client_compute_seconds += time.perf_counter() - t0
            self.state.costs.train_seconds += time.perf_counter() - t0
            self.state.costs.local_steps += steps
            self.global_params.copy_(self.params)
            self._finish_round(round)

    def reduce_costs(self) -> None:
        """Sum per-rank client costs over ranks (call on every rank once training is done)."""
        c = self.state.costs
        fields = ("client_compute_seconds", "train_examples", "train_tokens", "padded_tokens", "local_steps")
        if self.world.size == 1:
            return
        t = torch.tensor([float(getattr(c, f)) for f in fields], dtype=torch.float64, device=self.global_params.device)
        self.world.all_reduce(t)
        for f, v in zip(fields, t.tolist()):
            setattr(c, f, v if f == "client_compute_seconds" else int(v))

    # ---- checkpoints --------------------------------------------------------------
    def checkpoint_state(self) -> dict[str, Any]:
        """Everything needed to continue after ``self.state.round`` (see fednlp_bench.checkpoint)."""
        state: dict[str, Any] = {
            "global_params": self.global_params,
            "round": self.state.round,
            "per_round": self.state.per_round,
            "failures": [vars(f) for f in self.state.failures],
            "costs": vars(self.state.costs),
            "clients": self.clients.state_dict(),
        }
        if self.algorithm is not None:
            state["algorithm"] = self.algorithm.state_dict()
        if self._central_optimizer is not None:
            opt = self._central_optimizer.state_dict()
            state["optimizer"] = {"state": {str(k): v for k, v in opt["state"].items()},
                                  "param_groups": opt["param_groups"]}
        return state

    def restore(self, state: dict[str, Any]) -> None:
        """Load a :meth:`checkpoint_state`; call before ``run_federated``/``run_centralized``."""
        self.global_params.copy_(state["global_params"])
        self.params.copy_(self.global_params)
        self.state.round = int(state["round"])
        self.state.per_round = list(state["per_round"])
        self.state.failures = [Failure(**f) for f in state["failures"]]
        self.state.costs = Costs(**state["costs"])
        self.clients.load_state_dict(state.get("clients", {}))
        self._restored_algorithm_state = state.get("algorithm")
        if "optimizer" in state:
            opt = state["optimizer"]
            self._optimizer_state = {"state": {int(k): v for k, v in opt["state"].items()},
                                     "param_groups": opt["param_groups"]}

    def _finish_round(self, round: int) -> None:
        self.state.round = round
        cfg = self.cfg
        if round % cfg.fl.eval_every == 0 or round == cfg.fl.rounds:
            if self.world.is_main:
                self.state.per_round.append(self.evaluate(round))
        if self.on_round is not None:
            self.on_round(round)

    def run_federated(self) -> None:
        self.algorithm.n_clients = len(self.client_train)
        self.algorithm.init_server(self.global_params)
        if self._restored_algorithm_state is not None:
            self.algorithm.load_state_dict(self._restored_algorithm_state)
        for round in range(self.state.round + 1, self.cfg.fl.rounds + 1):
            t0 = time.perf_counter()
            self.run_round(round)
            self.state.costs.train_seconds += time.perf_counter() - t0
            self._finish_round(round)
