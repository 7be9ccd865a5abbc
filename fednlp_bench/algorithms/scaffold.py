"""SCAFFOLD: Karimireddy et al., "SCAFFOLD: Stochastic Controlled Averaging for
Federated Learning", ICML 2020 (Algorithm 1, control-variate option II).

The server keeps a control variate ``c`` (broadcast with the weights, hence
``extra_broadcast_vectors = 1``) and one ``c_i`` per client. Client ``i`` runs
its ``K`` local steps from ``x`` and after each optimiser step moves its
weights by ``-lr * (c - c_i)``, the paper's drift correction
``y <- y - lr (g - c_i + c)`` written for any local optimiser (with SGD it is
exactly the paper's update). Afterwards (option II)::

    c_i+ = c_i - c + (x - y_i) / (K * lr)        delta_c_i = c_i+ - c_i

and the client uploads ``delta_c_i`` as an extra. The server sets
``x <- x + server_lr * mean delta_y`` (example-weighted like FedAvg) and
``c <- c + |S| / N * mean delta_c_i`` with ``N`` the number of clients
(``Algorithm.n_clients``, set by the engine).

Memory: the ``c_i`` live on the CPU in a dict keyed by client id, so the server
holds O(clients seen x model) floats (MiniLM-L6: ~90 MB per client in fp32);
``client_state_dtype = "bfloat16"`` halves that. They are part of
:meth:`state_dict`. Under ``torchrun`` a client may be simulated on a different
rank in each round, so SCAFFOLD refuses to run with more than one rank.

Example::

    fednlp-bench run --task tc --preset smoke --algorithm scaffold
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from fednlp_bench.algorithms.base import Aggregate, Algorithm, ClientContext, ClientResult
from fednlp_bench.errors import ConfigError
from fednlp_bench.hparams import Checked, param

_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


@dataclass(frozen=True)
class ScaffoldHParams(Checked):
    _prefix = "algorithm."
    server_lr: float = param(1.0, low=0, low_open=True, finite=True, search=[0.5, 1.0, 2.0])
    #: storage dtype of the per-client control variates (CPU memory)
    client_state_dtype: str = param("float32", choices=tuple(_DTYPES))


class Scaffold(Algorithm):
    name = "scaffold"
    paper = "Karimireddy et al. 2020, SCAFFOLD: Stochastic Controlled Averaging for Federated Learning"
    HParams = ScaffoldHParams
    extra_broadcast_vectors = 1
    client_extras = ("delta_c",)
    paper_client_optimizer = "sgd"

    def __init__(self, hparams: Any = None) -> None:
        super().__init__(hparams)
        self.c: torch.Tensor | None = None
        self.client_c: dict[int, torch.Tensor] = {}
        self._correction: torch.Tensor | None = None
        self._optimizer: torch.optim.Optimizer | None = None

    # --- server half ----------------------------------------------------------
    def init_server(self, global_params: torch.Tensor) -> None:
        import torch.distributed as dist

        if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
            raise ConfigError("algorithm 'scaffold' keeps per-client state and runs with one rank only "
                              "(run it without torchrun)")
        if self.c is None:
            self.c = torch.zeros_like(global_params)
        else:  # loaded from a checkpoint
            self.c = self.c.to(global_params.device, torch.float32)

    def server_update(self, global_params: torch.Tensor, agg: Aggregate) -> None:
        if self.n_clients is None:
            raise ConfigError("algorithm 'scaffold' needs the number of clients N (Algorithm.n_clients)")
        global_params.add_(agg.mean_delta, alpha=self.hparams.server_lr)
        self.c.add_(agg.extras["delta_c"], alpha=agg.n_clients / self.n_clients)

    # --- client half ----------------------------------------------------------
    def client_update(self, ctx: ClientContext) -> ClientResult:
        c_i = self.client_c.get(ctx.client_id)
        c_i = torch.zeros_like(self.c) if c_i is None else c_i.to(self.c.device, torch.float32)
        self._correction = self.c - c_i
        make_optimizer = ctx.make_optimizer

        def make_and_keep() -> torch.optim.Optimizer:
            self._optimizer = make_optimizer()
            return self._optimizer

        ctx.make_optimizer = make_and_keep
        try:
            result = super().client_update(ctx)
        finally:
            ctx.make_optimizer = make_optimizer
            self._correction = None
        if result.n_steps == 0:
            result.extras["delta_c"] = torch.zeros_like(self.c)
            return result
        lr = self._optimizer.param_groups[0]["lr"]
        # option II: delta_c_i = -c + (x - y_i) / (K lr)
        delta_c = (ctx.global_params - ctx.params).div_(result.n_steps * lr).sub_(self.c)
        if not torch.isfinite(delta_c).all():
            raise FloatingPointError("non-finite control-variate update")
        self.client_c[ctx.client_id] = (c_i + delta_c).to("cpu", _DTYPES[self.hparams.client_state_dtype])
        result.extras["delta_c"] = delta_c
        return result

    def after_client_step(self, ctx: ClientContext) -> None:
        lr = self._optimizer.param_groups[0]["lr"]
        ctx.params.sub_(self._correction, alpha=lr)

    # --- checkpointing --------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        return {
            "c": None if self.c is None else self.c.detach().cpu().clone(),
            "client_c": {str(k): v.clone() for k, v in self.client_c.items()},
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        c = state.get("c")
        device = self.c.device if self.c is not None else "cpu"
        self.c = None if c is None else torch.as_tensor(c).to(device, torch.float32).clone()
        dtype = _DTYPES[self.hparams.client_state_dtype]
        self.client_c = {int(k): torch.as_tensor(v).to("cpu", dtype).clone()
                         for k, v in state.get("client_c", {}).items()}
