"""The public base class of FL algorithms (built-in and plugins take the same path).

An algorithm is one class holding both halves (after FedJAX and pfl-research):

* the **client half** - :meth:`Algorithm.client_update` trains the shared model in
  place on one client's data, starting from the broadcast global weights. The
  default runs :meth:`ClientContext.train`; hooks :meth:`client_loss` and
  :meth:`after_client_step` cover FedProx- and SCAFFOLD-style changes.
* the **server half** - :meth:`Algorithm.server_update` turns the weighted mean
  of the client deltas into new global weights (FedAvg: add it; FedOpt: feed
  it to a server optimiser as a pseudo-gradient).

Parameters travel as flat fp32 vectors. The engine keeps one model per worker
whose trainable parameters are views into one flat buffer, so loading the
broadcast is a single ``copy_`` and the client delta is one subtraction; the
aggregate is a running weighted sum (memory O(model), not O(clients x model)).

Hyper-parameters are a frozen dataclass in the class attribute ``HParams``;
``--set algorithm.<field>=value`` fills it. Server state is whatever
:meth:`state_dict` returns (tensors and JSON-able values), for checkpointing.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Callable, ClassVar, Iterator, Mapping

import torch

from fednlp_bench import hparams


def read_only(value: Any) -> Any:
    """A deep read-only copy of JSON-like data: mappings become ``MappingProxyType``, lists tuples."""
    if isinstance(value, Mapping):
        return MappingProxyType({k: read_only(v) for k, v in value.items()})
    if isinstance(value, (list, tuple)):
        return tuple(read_only(v) for v in value)
    return value


@dataclass(frozen=True)
class NoHParams:
    """For algorithms without hyper-parameters."""


@dataclass
class ClientResult:
    """What a client sends back besides its model delta.

    ``weight`` scales the client's delta in the weighted mean (FedAvg: its
    number of training examples). ``extras`` are flat tensors the engine
    averages over clients (unweighted), e.g. SCAFFOLD's control-variate deltas.
    """

    weight: float
    n_examples: int
    n_steps: int
    loss: float
    extras: dict[str, torch.Tensor] = field(default_factory=dict)


@dataclass
class Aggregate:
    """The server's view of a round: weighted mean delta and averaged extras."""

    mean_delta: torch.Tensor
    extras: dict[str, torch.Tensor]
    n_clients: int
    total_weight: float
    round: int


class ClientContext:
    """Everything the client half may use; built by the engine for each client.

    Attributes: ``model`` (trainable parameters are views of ``params``),
    ``params`` (flat local weights, starts equal to ``global_params``),
    ``grads`` (flat gradient buffer, views of each parameter's ``.grad``),
    ``global_params`` (the broadcast, read-only), ``client_id``, ``round``,
    ``n_examples``, ``device``, and the local schedule via :meth:`batches`.
    """

    def __init__(
        self,
        *,
        model: torch.nn.Module,
        params: torch.Tensor,
        grads: torch.Tensor,
        global_params: torch.Tensor,
        client_id: int,
        round: int,
        n_examples: int,
        batches: Callable[[], Iterator[dict[str, torch.Tensor]]],
        make_optimizer: Callable[[], torch.optim.Optimizer],
        autocast: Callable[[], Any],
        zero_grad: Callable[[], None] | None = None,
    ) -> None:
        self.model = model
        self.params = params
        self.grads = grads
        self.global_params = global_params
        self.client_id = client_id
        self.round = round
        self.n_examples = n_examples
        self._batches = batches
        self.make_optimizer = make_optimizer
        self.autocast = autocast
        self._zero_grad = zero_grad

    def zero_grad(self) -> None:
        """Zero the gradient buffer before a local step (the engine's row-sparse path zeroes only
        the rows that can be non-zero; see fednlp_bench.sparse_rows)."""
        if self._zero_grad is None:
            self.grads.zero_()
        else:
            self._zero_grad()

    def batches(self) -> Iterator[dict[str, torch.Tensor]]:
        """The client's local schedule (local epochs or steps), batches on the device.

        Each call starts the same schedule again from its first batch, so a client may pass over
        its data before training (q-FFL's loss at the broadcast, say) and then train on all of it.
        Every pass counts in the record's ``cost.train_examples``/``train_tokens``.
        """
        return self._batches()

    def loss(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """The model's mean loss on one batch (with the run's autocast), as local training computes it.

        Use it under ``torch.no_grad()`` to evaluate without building a graph.
        """
        with self.autocast():
            return self.model(**batch).loss

    def train(
        self,
        loss_hook: Callable[["ClientContext", torch.Tensor], torch.Tensor] | None = None,
        after_step: Callable[["ClientContext"], None] | None = None,
    ) -> tuple[int, float]:
        """Plain local training; returns (steps, mean loss). Raises on a non-finite loss."""
        optimizer = self.make_optimizer()
        if not all(m.training for m in self.model.modules()):  # train() walks (and HF re-checks) every module
            self.model.train()
        steps, total = 0, 0.0
        for batch in self.batches():
            loss = self.loss(batch)
            if loss_hook is not None:
                loss = loss_hook(self, loss)
            if not torch.isfinite(loss):
                raise FloatingPointError(f"non-finite loss {loss.item()} at local step {steps}")
            self.zero_grad()
            loss.backward()
            optimizer.step()
            if after_step is not None:
                after_step(self)
            steps += 1
            total += float(loss.detach())
        return steps, total / max(steps, 1)


CLIENT_HOOKS = ("client_update", "client_loss", "after_client_step", "process_update")


class Algorithm:
    """Base class of FL algorithms. Subclass, set ``name``/``HParams``, override hooks."""

    name: ClassVar[str] = ""
    HParams: ClassVar[type] = NoHParams
    paper: ClassVar[str] = ""
    #: flat vectors broadcast besides the weights (SCAFFOLD: 1), for byte accounting
    extra_broadcast_vectors: ClassVar[int] = 0
    #: names of the ``ClientResult.extras`` clients upload (SCAFFOLD: ("delta_c",)); user-level DP
    #: privatises only the model delta, so it refuses algorithms that declare any
    client_extras: ClassVar[tuple[str, ...]] = ()
    #: the local optimiser the paper's analysis assumes ("sgd"), if it assumes one; the record
    #: states the deviation when the run's ``fl.client_optimizer`` differs
    paper_client_optimizer: ClassVar[str | None] = None
    #: client hooks this class overrides that keep every row no batch looked up exactly unchanged, so
    #: the row-sparse client path stays exact (FedProx: its proximal gradient ``mu (w - w_global)`` is
    #: exactly 0 on a row that still holds the broadcast); see :meth:`row_sparse_exact`
    row_sparse_hooks: ClassVar[tuple[str, ...]] = ()
    #: number of clients in the population (SCAFFOLD's N); the engine sets it before
    #: :meth:`init_server`, ``None`` when the algorithm runs outside the engine
    n_clients: int | None = None
    #: the run's whole configuration, read-only (nested mappings, e.g. ``self.config["fl"]["client_lr"]``);
    #: set before :meth:`init_server`, ``None`` outside a run
    config: Mapping[str, Any] | None = None

    def __init__(self, hparams: Any = None) -> None:
        self.hparams = hparams if hparams is not None else self.HParams()

    # --- construction ---------------------------------------------------------
    @classmethod
    def from_params(cls, params: dict[str, Any]) -> "Algorithm":
        """Build from ``--set algorithm.x=...`` values: unknown names, bad types and values outside the
        ranges the ``HParams`` fields declare (:func:`fednlp_bench.hparams.param`) are rejected."""
        hp = hparams.build(cls.HParams, params, owner=f"algorithm '{cls.name}'", what="hyper-parameter",
                           prefix="algorithm.")
        cls.check_hparams(hp)
        return cls(hp)

    @classmethod
    def search_space(cls) -> dict[str, list[Any]]:
        """The grid a tuner tries: the ``search`` values declared on the ``HParams`` fields."""
        return hparams.search_space(cls.HParams)

    @classmethod
    def row_sparse_exact(cls) -> bool:
        """Whether the engine's row-sparse client path (fednlp_bench/sparse_rows.py) gives this
        algorithm's dense bits: every client hook is the base one or is listed in ``row_sparse_hooks``
        of the class that defines it (so a subclass that overrides such a hook again is dense until it
        declares the new one too)."""
        for hook in CLIENT_HOOKS:
            owner = next(k for k in cls.__mro__ if hook in vars(k))
            if owner is not Algorithm and hook not in vars(owner).get("row_sparse_hooks", ()):
                return False
        return True

    @classmethod
    def check_hparams(cls, hparams: Any) -> None:
        """Raise ``ConfigError`` for out-of-range values; override per algorithm."""

    def hparams_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self.hparams)

    # --- server half ----------------------------------------------------------
    def init_server(self, global_params: torch.Tensor) -> None:
        """Create server state (optimiser moments, control variates...)."""

    def server_update(self, global_params: torch.Tensor, agg: Aggregate) -> None:
        """Update ``global_params`` in place from the round's aggregate. FedAvg: add the mean delta."""
        global_params.add_(agg.mean_delta)

    # --- client half ----------------------------------------------------------
    def client_update(self, ctx: ClientContext) -> ClientResult:
        """Train ``ctx.model`` in place; the engine reads the delta from ``ctx.params``."""
        steps, loss = ctx.train(self.client_loss, self.after_client_step)
        return ClientResult(weight=float(ctx.n_examples), n_examples=ctx.n_examples, n_steps=steps, loss=loss)

    def client_loss(self, ctx: ClientContext, loss: torch.Tensor) -> torch.Tensor:
        """Hook: change the local loss (FedProx adds its proximal term here)."""
        return loss

    def after_client_step(self, ctx: ClientContext) -> None:  # noqa: B027 - optional hook
        """Hook: runs after each local optimiser step (SCAFFOLD corrects here)."""

    def process_update(self, delta: torch.Tensor, ctx: ClientContext, result: ClientResult) -> None:  # noqa: B027
        """Hook: transform the client's delta in place before aggregation (clipping, normalising)."""

    # --- checkpointing --------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:  # noqa: B027
        pass
