"""The clients' local optimiser: built once per worker, reset in place for every client.

Every client starts local training from a fresh optimiser (zero moments, step 0), as if it were
built anew. Building one per client would allocate (and page-fault) two model-sized buffers
each time, so :class:`ClientOptimizer` builds it once and, for each later client, zeroes its
state tensors in place and restores its hyper-parameters: numerically a new optimiser.

AdamW uses the fused kernel (one pass over each tensor, CPU and CUDA) when the parameters are
float32 on such a device: 3-4x faster per step than the per-tensor loop torch uses on CPU by
default, a large share of a short local update.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class OptimizerSpec:
    """``adamw`` (the default) or ``sgd`` (with optional heavy-ball ``momentum``)."""

    name: str = "adamw"
    lr: float = 5e-5
    weight_decay: float = 0.0
    momentum: float = 0.0

    def build(self, params: list[torch.Tensor], device: torch.device) -> torch.optim.Optimizer:
        fused = device.type in ("cpu", "cuda") and all(p.dtype == torch.float32 for p in params)
        if self.name == "sgd":
            return torch.optim.SGD(params, lr=self.lr, momentum=self.momentum, weight_decay=self.weight_decay,
                                   **({"fused": True} if fused else {}))
        kwargs = {"lr": self.lr, "weight_decay": self.weight_decay}
        if fused:
            kwargs["fused"] = True
        return torch.optim.AdamW(params, **kwargs)


def trainable(model: torch.nn.Module) -> list[torch.nn.Parameter]:
    return [p for p in model.parameters() if p.requires_grad]


class ClientOptimizer:
    """The worker's client optimiser, handed out in the state of a freshly built one."""

    def __init__(self, spec: OptimizerSpec, model: torch.nn.Module, device: torch.device) -> None:
        self.spec, self.model, self.device = spec, model, device
        self._opt: torch.optim.Optimizer | None = None
        self._defaults: list[dict] = []  # each param group's settings as built

    def new(self) -> torch.optim.Optimizer:
        """A separate, newly built optimiser over the trainable parameters (centralized training)."""
        return self.spec.build(trainable(self.model), self.device)

    def fresh(self) -> torch.optim.Optimizer:
        """The reused optimiser, reset to the state of a new one."""
        opt = self._opt
        if opt is None:
            opt = self._opt = self.new()
            self._defaults = [{k: v for k, v in g.items() if k != "params"} for g in opt.param_groups]
            return opt
        for group, defaults in zip(opt.param_groups, self._defaults):
            group.update(defaults)
        for state in opt.state.values():
            for value in state.values():
                if torch.is_tensor(value):
                    value.zero_()
        return opt
