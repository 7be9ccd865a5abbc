"""FedNova: Wang et al., "Tackling the Objective Inconsistency Problem in
Heterogeneous Federated Optimization", NeurIPS 2020.

With local epochs, clients with more data take more local steps ``tau_i`` and
FedAvg's weighted mean drifts towards their local optima. FedNova averages
*normalised* updates ``delta_i / tau_i`` (the mean per-step update) with
weights ``p_i = n_i / n`` and rescales by the effective number of steps
``tau_eff = sum_i p_i tau_i``::

    x <- x + server_lr * tau_eff * sum_i p_i delta_i / tau_i

This is the paper's vanilla-SGD normaliser ``a_i = tau_i`` (it uses the step
count whatever the local optimiser). With equal ``tau_i`` it is FedAvg.
``p_i * tau_i`` travels as a one-element extra; the engine averages extras
over clients, so ``tau_eff = mean(n_i tau_i) * n_clients / sum_i n_i``.

Example::

    fednlp-bench run --task tc --preset smoke --algorithm fednova --partition quantity
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from fednlp_bench.algorithms.base import Aggregate, Algorithm, ClientContext, ClientResult
from fednlp_bench.hparams import Checked, param


@dataclass(frozen=True)
class FedNovaHParams(Checked):
    _prefix = "algorithm."
    server_lr: float = param(1.0, low=0, low_open=True, finite=True)


class FedNova(Algorithm):
    name = "fednova"
    paper = "Wang et al. 2020, Tackling the Objective Inconsistency Problem in Heterogeneous Federated Optimization"
    HParams = FedNovaHParams
    client_extras = ("weighted_tau",)
    paper_client_optimizer = "sgd"

    def process_update(self, delta: torch.Tensor, ctx: ClientContext, result: ClientResult) -> None:
        tau = max(result.n_steps, 1)
        delta.div_(tau)
        result.extras["weighted_tau"] = torch.tensor([result.weight * tau], dtype=torch.float32,
                                                     device=delta.device)

    def server_update(self, global_params: torch.Tensor, agg: Aggregate) -> None:
        tau_eff = float(agg.extras["weighted_tau"]) * agg.n_clients / agg.total_weight
        global_params.add_(agg.mean_delta, alpha=self.hparams.server_lr * tau_eff)
