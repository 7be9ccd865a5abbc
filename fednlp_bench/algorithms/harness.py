"""A seconds-long FL simulation on a tiny model, for testing algorithms (built-in and plugins).

:func:`tiny_simulator` builds the real engine (:class:`fednlp_bench.engine.Simulator`:
flat parameter buffers, AdamW clients, running weighted aggregate, samplers,
dropout, the continual view) around a two-layer MLP on a synthetic Gaussian
mixture, with a minimal task adapter. No dataset, tokenizer or pretrained
weights are involved, so a round takes milliseconds::

    from fednlp_bench.algorithms.harness import tiny_simulator

    sim = tiny_simulator(MyAlgorithm(), n_clients=4, clients_per_round=2, local_steps=3)
    sim.run_federated()                      # all rounds, evaluating like a real run
    print(sim.state.per_round[-1]["accuracy"])
"""
from __future__ import annotations

from types import SimpleNamespace
from typing import Any, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from fednlp_bench.algorithms.base import Algorithm
from fednlp_bench.batching import Ragged, TokenizedData
from fednlp_bench.config import AlgorithmConfig, FLConfig, PartitionConfig, RunConfig


class TinyClassifier(torch.nn.Module):
    """``forward(x, labels)`` returns an object with ``.loss`` and ``.logits``, like a HF model."""

    def __init__(self, dim: int = 6, hidden: int = 8, n_classes: int = 3) -> None:
        super().__init__()
        self.hidden = torch.nn.Linear(dim, hidden)
        self.out = torch.nn.Linear(hidden, n_classes)

    def forward(self, x: torch.Tensor, labels: torch.Tensor | None = None) -> SimpleNamespace:
        logits = self.out(torch.tanh(self.hidden(x)))
        loss = F.cross_entropy(logits, labels) if labels is not None else None
        return SimpleNamespace(loss=loss, logits=logits)


class TinyTask:
    """The part of a task adapter the engine calls: ``collate``, ``predict``, ``score``."""

    name = "tiny"
    primary_metric = "accuracy"

    def collate(self, data: TokenizedData, rows: np.ndarray, pad_id: int) -> dict[str, torch.Tensor]:
        return {"x": torch.from_numpy(data.columns["x"][rows]), "labels": torch.from_numpy(data.columns["labels"][rows])}

    def predict(self, model, data: TokenizedData, rows: np.ndarray, batch_size: int, pad_id: int, device) -> dict:
        model.eval()
        with torch.inference_mode():
            logits = model(torch.from_numpy(data.columns["x"][rows]).to(device)).logits
        return dict(zip(rows.tolist(), logits.argmax(-1).cpu().numpy().tolist()))

    def score(self, predictions: dict, data: TokenizedData, rows: np.ndarray) -> dict[str, float]:
        if len(rows) == 0:
            return {"accuracy": float("nan")}
        y_pred = np.array([predictions[int(r)] for r in rows])
        return {"accuracy": float((y_pred == data.columns["labels"][rows]).mean())}


def tiny_data(n: int, rng: np.random.Generator, dim: int = 6, n_classes: int = 3) -> TokenizedData:
    """``n`` rows of a Gaussian mixture with one centre per class (length-1 token rows)."""
    centres = np.random.default_rng(1234).normal(size=(n_classes, dim)).astype(np.float32)
    labels = rng.integers(0, n_classes, size=n)
    x = centres[labels] + 0.8 * rng.normal(size=(n, dim)).astype(np.float32)
    return TokenizedData(
        ragged={"input_ids": Ragged.from_lists([[1]] * n)},
        columns={"x": x.astype(np.float32), "labels": labels.astype(np.int64)},
    )


def tiny_simulator(
    algorithm: Algorithm | None,
    *,
    n_clients: int = 4,
    clients_per_round: int = 2,
    client_sizes: Sequence[int] | None = None,
    n_test: int = 60,
    seed: int = 0,
    model: torch.nn.Module | None = None,
    **fl: Any,
):
    """A :class:`~fednlp_bench.engine.Simulator` over tiny synthetic clients.

    ``client_sizes`` gives each client's number of training rows (default 16
    each); other keyword arguments are ``FLConfig`` fields (``rounds``,
    ``local_steps``, ``batch_size``, ``client_lr``, ``sampler``, ``dropout``,
    ``continual``...). The model is built with ``torch.manual_seed(seed)``.
    """
    from fednlp_bench.run import fl_trainer

    sizes = list(client_sizes) if client_sizes is not None else [16] * n_clients
    n_clients = len(sizes)
    fl_cfg = FLConfig(**{"rounds": 2, "batch_size": 8, "client_lr": 1e-2, "eval_batch_size": 256,
                         "clients_per_round": clients_per_round, **fl})
    name = "centralized" if algorithm is None else (algorithm.name or type(algorithm).__name__)
    cfg = RunConfig(seed=seed, partition=PartitionConfig(n_clients=n_clients), fl=fl_cfg, device="cpu",
                    algorithm=AlgorithmConfig(name=name), wandb="disabled", progress=False)
    rng = np.random.default_rng([seed, 77])
    train = tiny_data(sum(sizes), rng)
    test = tiny_data(n_test, rng)
    bounds = np.cumsum([0, *sizes])
    client_train = [np.arange(bounds[i], bounds[i + 1]) for i in range(n_clients)]
    client_test = list(np.array_split(np.arange(n_test), n_clients))
    if model is None:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            model = TinyClassifier()
    return fl_trainer(cfg, TinyTask(), model, train, test, client_train, client_test, algorithm)
