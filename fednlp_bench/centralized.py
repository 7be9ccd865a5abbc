"""The centralized reference: one optimiser over all training rows with the FL run's budget.

The gap between FL and this baseline is the suite's headline number, so the baseline sees as many
training examples as the FL run with the same configuration trains on: :func:`fl_examples` replays
the FL run's cohorts on its real partition (the sampler, dropout and the continual view included,
so activity sampling's preference for large clients counts) and adds up each reporting client's
local work; :func:`centralized_plan` turns that into optimiser steps over the whole pool, cut into
round-sized segments so the learning curve is evaluated at the same points. Clients that fail with
an exception cannot be foreseen and are counted as having trained. It is its own trainer, not an
FL algorithm: no clients, no server, no aggregation.
"""
from __future__ import annotations

import math
import time
from typing import Any

import numpy as np
import torch

from fednlp_bench.callbacks import CallbackList
from fednlp_bench.local import LocalTraining
from fednlp_bench.state import client_seed


def local_examples(n: int, local_epochs: int, local_steps: int | None, batch_size: int) -> float:
    """Examples one FL client with ``n`` rows trains on in a round (expected, for ``local_steps``).

    ``local_epochs`` passes see ``n`` rows each. ``local_steps`` batches cycle through passes of
    ``ceil(n / batch_size)`` batches (windows of ``batch_size`` rows and a shorter last one, in
    random order), so a partial pass of ``k`` batches sees ``k * n / batches`` rows on average.
    """
    if n == 0:
        return 0.0
    if local_steps is None:
        return float(local_epochs * n)
    per_pass = math.ceil(n / batch_size)
    full, rest = divmod(local_steps, per_pass)
    return float(full * n + rest * n / per_pass)


def fl_examples(sizes_at, schedule, rounds: int, local_epochs: int, local_steps: int | None,
                batch_size: int) -> float:
    """Training examples of the FL run: each round's reporting clients, their local work summed."""
    total = 0.0
    for r in range(1, rounds + 1):
        sizes = sizes_at(r)
        for c in schedule.draw(r, sizes).reporting:
            total += local_examples(int(sizes[c]), local_epochs, local_steps, batch_size)
    return total


def centralized_plan(examples: float, batch_size: int, rounds: int) -> list[int]:
    """Optimiser steps per round-segment: ``examples`` in batches of ``batch_size`` over ``rounds``."""
    total_steps = max(1, math.ceil(examples / batch_size))
    return [len(chunk) for chunk in np.array_split(np.arange(total_steps), rounds)]


class CentralizedTrainer:
    """One continuous optimiser run over all training rows, in round-sized segments."""

    def __init__(self, local: LocalTraining, plan: list[int], *, seed: int,
                 callbacks: CallbackList | None = None) -> None:
        self.local, self.plan, self.seed = local, plan, seed
        self.state = local.state
        self.global_params = local.params.detach().clone()
        self.callbacks = callbacks or CallbackList()
        self.optimizer: torch.optim.Optimizer = local.optimizer.new()
        self.all_rows = np.arange(len(local.train_data))

    @property
    def rounds(self) -> int:
        return len(self.plan)

    def run(self) -> None:
        local = self.local
        stream = local.schedule(self.all_rows, np.random.default_rng([self.seed, 0xCE17]), epochs=1,
                                steps=sum(self.plan))
        for _ in range(sum(self.plan[: self.state.round])):  # resume: skip the batches already consumed
            next(stream)
        local.params.copy_(self.global_params)
        self.callbacks.run_start(self)
        for round in range(self.state.round + 1, self.rounds + 1):
            local.seed(client_seed(self.seed, round, 0))
            segment = (next(stream) for _ in range(self.plan[round - 1]))
            ctx = local.context(0, round, len(self.all_rows), segment, make_optimizer=lambda: self.optimizer,
                                global_params=self.global_params)
            t0 = time.perf_counter()
            steps, _ = ctx.train()
            costs = self.state.costs
            costs.client_compute_seconds += time.perf_counter() - t0
            costs.train_seconds += time.perf_counter() - t0
            costs.local_steps += steps
            self.global_params.copy_(local.params)
            self.state.round = round
            self.callbacks.round_end(self, round)
        self.callbacks.run_end(self)

    def state_dict(self) -> dict[str, Any]:
        opt = self.optimizer.state_dict()
        return {"global_params": self.global_params, "train": self.state.state_dict(),
                "optimizer": {"state": {str(k): v for k, v in opt["state"].items()},
                              "param_groups": opt["param_groups"]}}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.global_params.copy_(state["global_params"])
        self.local.params.copy_(self.global_params)
        self.state.load_state_dict(state["train"])
        opt = state["optimizer"]
        self.optimizer.load_state_dict({"state": {int(k): v for k, v in opt["state"].items()},
                                        "param_groups": opt["param_groups"]})
