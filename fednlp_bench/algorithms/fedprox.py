"""FedProx: Li et al., "Federated Optimization in Heterogeneous Networks", MLSys 2020.

Each client minimises its loss plus the proximal term
``mu/2 * ||w - w_global||^2``, which keeps local models near the broadcast when
client data (or the amount of local work) differ. The server half is FedAvg's.

The term is computed on the flat parameter buffers, not per tensor: its value
is one fused ``(w - w_global)`` reduction and its gradient ``mu * (w - w_global)``
is added to the flat gradient buffer in one in-place operation during
``backward`` (see :class:`_ProximalTerm`). ``mu = 0`` reproduces FedAvg exactly.

The term keeps the engine's row-sparse client path exact: a vocabulary row that no batch of the
client has looked up still holds the broadcast, so its proximal gradient is exactly 0 and AdamW
leaves it alone, as in the dense path (``row_sparse_hooks``; tests/test_sparse_rows.py).

Example::

    fednlp-bench run --task tc --preset smoke --algorithm fedprox --set algorithm.mu=0.01
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from fednlp_bench.algorithms.base import ClientContext
from fednlp_bench.algorithms.fedavg import FedAvg
from fednlp_bench.hparams import Checked, param


@dataclass(frozen=True)
class FedProxHParams(Checked):
    _prefix = "algorithm."
    #: weight of the proximal term; the paper tries {0.001, 0.01, 0.1, 1}
    mu: float = param(0.01, low=0, finite=True, search=[0.001, 0.01, 0.1], doc="weight of the proximal term")


class _ProximalTerm(torch.autograd.Function):
    """``loss + mu/2 ||w - w_g||^2`` whose backward writes ``mu (w - w_g)`` into the flat grads.

    The model's parameters are views of ``params`` and their ``.grad`` views of
    ``grads``; autograd accumulates the data-loss gradient into the same buffer,
    so the sum is the gradient of the proximal objective.
    """

    @staticmethod
    def forward(fctx, loss, params, global_params, grads, mu, scratch):  # type: ignore[override]
        diff = torch.sub(params, global_params, out=scratch)
        fctx.diff, fctx.grads, fctx.mu = diff, grads, mu
        return loss + 0.5 * mu * torch.dot(diff, diff).to(loss.dtype)

    @staticmethod
    def backward(fctx, grad_out):  # type: ignore[override]
        fctx.grads.add_(fctx.diff, alpha=float(grad_out) * fctx.mu)
        return grad_out, None, None, None, None, None


class FedProx(FedAvg):
    name = "fedprox"
    paper = "Li et al. 2020, Federated Optimization in Heterogeneous Networks"
    HParams = FedProxHParams
    row_sparse_hooks = ("client_loss",)

    _scratch: torch.Tensor | None = None

    def client_loss(self, ctx: ClientContext, loss: torch.Tensor) -> torch.Tensor:
        # one model-sized buffer for ``w - w_global``, reused every step: a fresh 70 MB tensor per step
        # costs more in page faults than the arithmetic (2-3x the term's time on a CPU)
        s, p = self._scratch, ctx.params
        if s is None or (s.shape, s.dtype, s.device) != (p.shape, p.dtype, p.device):
            self._scratch = torch.empty_like(p)
        return _ProximalTerm.apply(loss, ctx.params, ctx.global_params, ctx.grads, float(self.hparams.mu),
                                   self._scratch)
