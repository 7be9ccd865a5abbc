"""FedDyn: Acar et al., "Federated Learning Based on Dynamic Regularization", ICLR 2021.

Each client ``i`` keeps the gradient of its previous local objective, ``g_i``,
and minimises a dynamically regularised loss whose stationary points agree
with the global objective's (Algorithm 1 of the paper)::

    L_i(w) - <g_i, w - x> + alpha/2 ||w - x||^2        then  g_i <- g_i - alpha (y_i - x)

The server keeps ``h`` and, with ``P`` the clients that reported and ``N`` all
clients::

    h <- h - alpha |P| / N * mean_i (y_i - x)
    x <- mean_i y_i - h / alpha

The mean is unweighted, as in the paper (``ClientResult.weight = 1``). The
``g_i`` live on the CPU keyed by client id: O(clients seen x model) memory.
The regulariser is evaluated on the engine's flat parameter buffers and its
gradient ``alpha (w - x) - g_i`` added to the flat gradient buffer in one
in-place operation.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch

from fednlp_bench.algorithms import Aggregate, Algorithm, ClientContext, ClientResult
from fednlp_bench.config import ConfigError


@dataclass(frozen=True)
class FedDynHParams:
    #: strength of the dynamic regulariser; the paper uses {0.1, 0.01, 0.001}
    alpha: float = 0.01

    def __post_init__(self) -> None:
        a = self.alpha
        if isinstance(a, bool) or not isinstance(a, (int, float)) or not math.isfinite(a) or a <= 0:
            raise ConfigError(f"algorithm.alpha must be a finite number > 0 for 'feddyn', got {a!r}")


class _DynamicRegulariser(torch.autograd.Function):
    """``loss - <g, w - x> + alpha/2 ||w - x||^2``; backward adds ``alpha (w - x) - g`` to the flat grads."""

    @staticmethod
    def forward(fctx, loss, params, global_params, grads, linear, alpha):  # type: ignore[override]
        diff = params - global_params
        fctx.diff, fctx.grads, fctx.linear, fctx.alpha = diff, grads, linear, alpha
        extra = 0.5 * alpha * torch.dot(diff, diff) - torch.dot(linear, diff)
        return loss + extra.to(loss.dtype)

    @staticmethod
    def backward(fctx, grad_out):  # type: ignore[override]
        scale = float(grad_out)
        fctx.grads.add_(fctx.diff, alpha=scale * fctx.alpha).sub_(fctx.linear, alpha=scale)
        return grad_out, None, None, None, None, None


class FedDyn(Algorithm):
    name = "feddyn"
    paper = "Acar et al. 2021, Federated Learning Based on Dynamic Regularization"
    HParams = FedDynHParams

    def __init__(self, hparams: Any = None) -> None:
        super().__init__(hparams)
        self.h: torch.Tensor | None = None
        self.client_grad: dict[int, torch.Tensor] = {}
        self._linear: torch.Tensor | None = None

    # --- server half ----------------------------------------------------------
    def init_server(self, global_params: torch.Tensor) -> None:
        if self.h is None:
            self.h = torch.zeros_like(global_params)
        else:  # loaded from a checkpoint
            self.h = self.h.to(global_params.device, torch.float32)

    def server_update(self, global_params: torch.Tensor, agg: Aggregate) -> None:
        if self.n_clients is None:
            raise ConfigError("algorithm 'feddyn' needs the number of clients N (Algorithm.n_clients)")
        alpha = self.hparams.alpha
        self.h.sub_(agg.mean_delta, alpha=alpha * agg.n_clients / self.n_clients)
        global_params.add_(agg.mean_delta).sub_(self.h, alpha=1.0 / alpha)

    # --- client half ----------------------------------------------------------
    def client_update(self, ctx: ClientContext) -> ClientResult:
        g = self.client_grad.get(ctx.client_id)
        g = torch.zeros_like(ctx.params) if g is None else g.to(ctx.params.device)
        self._linear = g
        try:
            steps, loss = ctx.train(self.client_loss, self.after_client_step)
        finally:
            self._linear = None
        new_g = g.sub_(ctx.params - ctx.global_params, alpha=self.hparams.alpha)
        if not torch.isfinite(new_g).all():
            raise FloatingPointError("non-finite FedDyn client state")
        self.client_grad[ctx.client_id] = new_g.cpu()
        return ClientResult(weight=1.0, n_examples=ctx.n_examples, n_steps=steps, loss=loss)

    def client_loss(self, ctx: ClientContext, loss: torch.Tensor) -> torch.Tensor:
        return _DynamicRegulariser.apply(loss, ctx.params, ctx.global_params, ctx.grads, self._linear,
                                         float(self.hparams.alpha))

    # --- checkpointing --------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        return {"h": None if self.h is None else self.h.detach().cpu().clone(),
                "client_grad": {str(k): v.clone() for k, v in self.client_grad.items()}}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        device = self.h.device if self.h is not None else "cpu"
        self.h = None if state.get("h") is None else torch.as_tensor(state["h"]).to(device, torch.float32).clone()
        self.client_grad = {int(k): torch.as_tensor(v).cpu().clone() for k, v in state.get("client_grad", {}).items()}
