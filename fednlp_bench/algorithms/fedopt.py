"""FedOpt: adaptive server optimisers. Reddi et al., "Adaptive Federated Optimization",
ICLR 2021 (FedAdam, FedYogi, FedAdagrad); Hsu et al., "Measuring the Effects of
Non-Identical Data Distribution for Federated Visual Classification", 2019 (FedAvgM).

Clients train as in FedAvg. The server treats the weighted mean client delta
``D`` (the negative pseudo-gradient) as the input of an optimiser
(Reddi et al. Algorithm 2, no bias correction)::

    m = beta1 * m + (1 - beta1) * D
    v = beta2 * v + (1 - beta2) * D^2                 FedAdam
    v = v - (1 - beta2) * D^2 * sign(v - D^2)          FedYogi
    v = v + D^2                                        FedAdagrad
    w = w + server_lr * m / (sqrt(v) + tau)

with ``m = 0`` and ``v = tau^2`` at the start. FedAvgM keeps a server momentum
buffer ``u = momentum * u + D`` and sets ``w = w + server_lr * u``.

Defaults suit fine-tuning a pretrained transformer with client AdamW (small
deltas): the adaptive optimisers move every coordinate by about ``server_lr``
per round, so ``server_lr`` is of the order of a few client steps.

Example::

    fednlp-bench run --task tc --preset smoke --algorithm fedadam --set algorithm.server_lr=1e-3
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import torch

from fednlp_bench.algorithms.base import Aggregate
from fednlp_bench.algorithms.fedavg import FedAvg
from fednlp_bench.hparams import Checked, param


@dataclass(frozen=True)
class AdaptiveHParams(Checked):
    _prefix = "algorithm."
    # search: a small slice of Reddi et al.'s grid (server lr 10^-3..10^0 x tau 10^-5..10^-1) around the
    # scale of a client delta under AdamW at lr ~1e-4 (a few 1e-4 per coordinate), so tau 1e-6 is
    # sign-like and 1e-4 damps small coordinates
    server_lr: float = param(1e-3, low=0, low_open=True, finite=True, search=[3e-4, 1e-3, 3e-3])
    beta1: float = param(0.9, low=0, high=1, high_open=True, interval=True)
    beta2: float = param(0.99, low=0, high=1, high_open=True, interval=True)
    tau: float = param(1e-6, low=0, low_open=True, finite=True, search=[1e-6, 1e-4],
                       doc="adaptivity; the paper's grid is 1e-1 ... 1e-5")


@dataclass(frozen=True)
class AdagradHParams(Checked):
    _prefix = "algorithm."
    server_lr: float = param(1e-3, low=0, low_open=True, finite=True, search=[3e-4, 1e-3, 3e-3])
    beta1: float = param(0.0, low=0, high=1, high_open=True, interval=True,
                         doc="Reddi et al. use momentum for FedAdagrad too; 0 is plain Adagrad")
    tau: float = param(1e-6, low=0, low_open=True, finite=True, search=[1e-6, 1e-4])


@dataclass(frozen=True)
class MomentumHParams(Checked):
    _prefix = "algorithm."
    server_lr: float = param(1.0, low=0, low_open=True, finite=True, search=[0.3, 1.0])
    momentum: float = param(0.9, low=0, high=1, high_open=True, interval=True, search=[0.5, 0.9])


class ServerOptimizer(FedAvg):
    """Base of the FedOpt family: FedAvg clients, server state as named flat tensors."""

    #: names of the flat server-state buffers, created at :meth:`init_server`
    buffers: ClassVar[tuple[str, ...]] = ()

    def __init__(self, hparams: Any = None) -> None:
        super().__init__(hparams)
        self.state: dict[str, torch.Tensor] = {}
        self.rounds = 0

    def initial_value(self, name: str) -> float:
        return 0.0

    def init_server(self, global_params: torch.Tensor) -> None:
        for name in self.buffers:
            if name in self.state:  # loaded from a checkpoint before the run started
                self.state[name] = self.state[name].to(global_params.device, torch.float32)
            else:
                self.state[name] = torch.full_like(global_params, self.initial_value(name))

    def server_update(self, global_params: torch.Tensor, agg: Aggregate) -> None:
        self.step(global_params, agg.mean_delta)
        self.rounds += 1

    def step(self, global_params: torch.Tensor, delta: torch.Tensor) -> None:
        raise NotImplementedError

    def state_dict(self) -> dict[str, Any]:
        return {"rounds": self.rounds, **{k: v.detach().cpu().clone() for k, v in self.state.items()}}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        missing = [name for name in self.buffers if name not in state]
        if missing:
            raise ValueError(f"{self.name} state is missing {missing}")
        device = next(iter(self.state.values())).device if self.state else "cpu"
        self.state = {name: torch.as_tensor(state[name]).to(device, torch.float32).clone() for name in self.buffers}
        self.rounds = int(state.get("rounds", 0))


class _Adaptive(ServerOptimizer):
    buffers = ("m", "v")

    def initial_value(self, name: str) -> float:
        return self.hparams.tau ** 2 if name == "v" else 0.0

    def second_moment(self, v: torch.Tensor, delta_sq: torch.Tensor) -> None:
        raise NotImplementedError

    def step(self, global_params: torch.Tensor, delta: torch.Tensor) -> None:
        hp = self.hparams
        m, v = self.state["m"], self.state["v"]
        m.mul_(hp.beta1).add_(delta, alpha=1.0 - hp.beta1)
        self.second_moment(v, delta * delta)
        global_params.addcdiv_(m, v.sqrt().add_(hp.tau), value=hp.server_lr)


class FedAdam(_Adaptive):
    name = "fedadam"
    paper = "Reddi et al. 2021, Adaptive Federated Optimization"
    HParams = AdaptiveHParams

    def second_moment(self, v: torch.Tensor, delta_sq: torch.Tensor) -> None:
        v.mul_(self.hparams.beta2).add_(delta_sq, alpha=1.0 - self.hparams.beta2)


class FedYogi(_Adaptive):
    name = "fedyogi"
    paper = "Reddi et al. 2021, Adaptive Federated Optimization"
    HParams = AdaptiveHParams

    def second_moment(self, v: torch.Tensor, delta_sq: torch.Tensor) -> None:
        v.sub_(delta_sq * torch.sign(v - delta_sq), alpha=1.0 - self.hparams.beta2)


class FedAdagrad(_Adaptive):
    name = "fedadagrad"
    paper = "Reddi et al. 2021, Adaptive Federated Optimization"
    HParams = AdagradHParams

    def second_moment(self, v: torch.Tensor, delta_sq: torch.Tensor) -> None:
        v.add_(delta_sq)


class FedAvgM(ServerOptimizer):
    name = "fedavgm"
    paper = "Hsu et al. 2019, Measuring the Effects of Non-Identical Data Distribution for Federated Visual Classification"
    HParams = MomentumHParams
    buffers = ("momentum",)

    def step(self, global_params: torch.Tensor, delta: torch.Tensor) -> None:
        u = self.state["momentum"]
        u.mul_(self.hparams.momentum).add_(delta)
        global_params.add_(u, alpha=self.hparams.server_lr)
