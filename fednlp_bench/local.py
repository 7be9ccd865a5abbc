"""The worker's one model and the local schedule every client (and the centralized run) trains with.

Performance rule 1: one model per worker. Its trainable parameters are views into one flat fp32
buffer (:func:`flatten_model`), so loading the broadcast is a single ``copy_`` and a client's
delta one subtraction; nothing is deep-copied per client. Batches are built from the cached
token arrays with dynamic padding (:mod:`fednlp_bench.batching`).
"""
from __future__ import annotations

from typing import Any, Callable, Iterable, Iterator

import numpy as np
import torch

from fednlp_bench.algorithms.base import ClientContext
from fednlp_bench.batching import TokenizedData, length_grouped_batches
from fednlp_bench.optim import ClientOptimizer, OptimizerSpec
from fednlp_bench.state import TrainState
from fednlp_bench.world import autocast_factory

#: ``batcher(rows, lengths, batch_size, rng) -> list of row batches``: one pass over ``rows``
Batcher = Callable[[np.ndarray, np.ndarray, int, np.random.Generator], list[np.ndarray]]
#: builds a client's :class:`ClientContext` (sample-level DP swaps in its own local loop)
ContextFactory = Callable[..., ClientContext]


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


class LocalTraining:
    """The model, its flat buffers, the client optimiser and the local batch schedule."""

    def __init__(self, model: torch.nn.Module, task: Any, train: TokenizedData, *, pad_id: int,
                 device: torch.device, batch_size: int, optimizer: OptimizerSpec, state: TrainState,
                 make_context: ContextFactory = ClientContext, batcher: Batcher = length_grouped_batches) -> None:
        self.model = model.to(device)
        self.task, self.train_data, self.pad_id, self.device = task, train, pad_id, device
        self.batch_size = batch_size
        self.state = state
        self.make_context = make_context
        #: the plain local loop (ClientContext.train); False when e.g. DP-SGD replaces it
        self.plain_loop = make_context is ClientContext
        self.batcher = batcher
        self.autocast = autocast_factory(device)
        self.params, self.grads = flatten_model(self.model)
        self.optimizer = ClientOptimizer(optimizer, self.model, device)

    def seed(self, seed: int) -> None:
        """Seed the generators local training draws from (dropout): the CPU one, and the model's
        GPU when it has one. What ``torch.manual_seed`` does for these, without its per-call
        lazy-initialisation bookkeeping for every other accelerator type (~0.4 ms a call)."""
        torch.default_generator.manual_seed(seed)
        if self.device.type == "cuda":
            with torch.cuda.device(self.device):
                torch.cuda.manual_seed(seed)

    def schedule(self, rows: np.ndarray, rng: np.random.Generator, epochs: int,
                 steps: int | None) -> Iterator[np.ndarray]:
        """Row batches of a local schedule: ``epochs`` passes, or exactly ``steps`` batches."""
        if len(rows) == 0:
            return
        done = epoch = 0
        while True:
            for b in self.batcher(rows, self.train_data.lengths, self.batch_size, rng):
                if steps is not None and done >= steps:
                    return
                yield b
                done += 1
            epoch += 1
            if steps is None and epoch >= epochs:
                return

    def to_device(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        if self.device.type == "cuda":
            return {k: v.pin_memory().to(self.device, non_blocking=True) for k, v in batch.items()}
        return batch

    def batches(self, row_batches: Iterable[np.ndarray]) -> Iterator[dict[str, torch.Tensor]]:
        lengths = self.train_data.lengths
        for rows in row_batches:
            self.state.costs.count_batch(lengths[rows])
            yield self.to_device(self.task.collate(self.train_data, rows, self.pad_id))

    def context(self, client: int, round: int, n_examples: int, row_batches: Iterable[np.ndarray],
                make_optimizer: Callable[[], torch.optim.Optimizer], global_params: torch.Tensor,
                **extra: Any) -> ClientContext:
        """A client's context; its ``batches()`` replays the same row batches on every call."""
        schedule = list(row_batches)
        return self.make_context(
            **extra, model=self.model, params=self.params, grads=self.grads, global_params=global_params,
            client_id=client, round=round, n_examples=n_examples, batches=lambda: self.batches(schedule),
            make_optimizer=make_optimizer, autocast=self.autocast,
        )
