"""How one client's update is produced on the worker's model: dense, or exactly row-sparse.

Both runners have the same small interface, used by the round loop
(:meth:`fednlp_bench.engine.Simulator.run_round`):

* :meth:`start_round` - the broadcast changed (a server step happened);
* :meth:`load` - put the broadcast into the model's weights (and reset the optimiser);
* :meth:`context_kwargs` / :meth:`training` - what the client's local training runs with;
* :meth:`delta` - the client's update as a :class:`ClientUpdate`, which can add itself
  (weighted) to the round's aggregate.

:class:`DenseRunner` works on the full flat buffers. :class:`RowSparseRunner` restricts every
pass over a vocabulary-sized embedding table to the rows the client looked up; where it is used
(:func:`choose_runner`) the result is the dense runner's, not an approximation
(:mod:`fednlp_bench.sparse_rows` derives why).
"""
from __future__ import annotations

import contextlib
import logging
from typing import Any, Iterator

import torch

from fednlp_bench.local import LocalTraining
from fednlp_bench.sparse_rows import RowSparseClient, eligible_tables

log = logging.getLogger(__name__)


class ClientUpdate:
    """A dense client delta (a flat tensor the postprocessors may edit in place)."""

    def __init__(self, delta: torch.Tensor) -> None:
        self.delta = delta

    def check_finite(self) -> None:
        if not torch.isfinite(self.delta.sum()):  # one reduction, no model-sized bool mask
            raise FloatingPointError("non-finite model update")

    def add_to(self, total: torch.Tensor, weight: float) -> None:
        total.add_(self.delta, alpha=weight)


class SparseUpdate(ClientUpdate):
    """A row-sparse client delta: (where, values) parts; checked finite when it was made."""

    def __init__(self, parts: list[tuple[object, torch.Tensor]]) -> None:
        self.parts = parts

    def check_finite(self) -> None:
        pass  # RowSparseClient.delta() raises on a non-finite update

    def add_to(self, total: torch.Tensor, weight: float) -> None:
        RowSparseClient.add_to(total, self.parts, weight)


class DenseRunner:
    """The plain path: load the whole broadcast, train, subtract."""

    name = "dense"

    def __init__(self, local: LocalTraining, global_params: torch.Tensor) -> None:
        self.local, self.global_params = local, global_params
        self._delta: torch.Tensor | None = None

    def start_round(self) -> None:
        self._delta = torch.empty_like(self.global_params)

    def load(self) -> None:
        self.local.params.copy_(self.global_params)

    def context_kwargs(self) -> dict[str, Any]:
        return {"make_optimizer": self.local.optimizer.fresh}

    def training(self) -> contextlib.AbstractContextManager:
        return contextlib.nullcontext()

    def delta(self) -> ClientUpdate:
        torch.sub(self.local.params, self.global_params, out=self._delta)
        return ClientUpdate(self._delta)


class RowSparseRunner:
    """The exact row-sparse path over vocabulary embeddings (:mod:`fednlp_bench.sparse_rows`)."""

    name = "row_sparse"

    def __init__(self, fast: RowSparseClient) -> None:
        self.fast = fast

    def start_round(self) -> None:
        self.fast.start_round()

    def load(self) -> None:
        self.fast.start_client()  # the broadcast, restoring only what the last client changed

    def context_kwargs(self) -> dict[str, Any]:
        return {"make_optimizer": lambda: self.fast, "zero_grad": self.fast.zero_grad}

    @contextlib.contextmanager
    def training(self) -> Iterator[None]:
        with self.fast.active():
            yield

    def delta(self) -> ClientUpdate:
        return SparseUpdate(self.fast.delta())


def choose_runner(local: LocalTraining, global_params: torch.Tensor, *, enabled: bool, rows_exact: bool,
                  dense_only: list[str]) -> DenseRunner | RowSparseRunner:
    """The row-sparse runner where it is exact, else the dense one.

    Exact when: the algorithm's client half leaves rows nobody looked up alone (``rows_exact``:
    FedAvg, the FedOpt family and FedProx; ``Algorithm.row_sparse_exact``), no component needs the
    dense update (``dense_only`` names those that do: update postprocessors, a non-default local
    loop, a robust aggregator), the client optimiser is AdamW without weight decay or AMSGrad (a
    fresh AdamW then leaves rows nobody looked up exactly unchanged) running the fused kernel (whose
    SIMD body / scalar tail split the sparse path reproduces), and the model has embedding tables of
    at least ``sparse_rows.MIN_ROWS`` rows that no other module shares.
    """
    dense = DenseRunner(local, global_params)
    spec = local.optimizer.spec
    if not enabled or not rows_exact or dense_only or spec.name != "adamw" or spec.weight_decay != 0.0:
        return dense
    tables = eligible_tables(local.model)
    if not tables:
        return dense
    opt = local.optimizer.new()
    if type(opt) is not torch.optim.AdamW or opt.defaults.get("amsgrad") or not opt.defaults.get("fused"):
        return dense  # (bit-exact only with the fused kernel: sparse_rows.py)
    hparams = {k: v for k, v in opt.defaults.items() if k != "params"}
    fast = RowSparseClient(local.params, local.grads, global_params, tables, hparams,
                           [p for group in opt.param_groups for p in group["params"]])
    log.info("row-sparse client updates for %d embedding table(s), %d of %d trainable parameters",
             len(tables), fast.n_sparse_parameters, local.params.numel())
    return RowSparseRunner(fast)
