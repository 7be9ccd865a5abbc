"""Scoring the global model: one inference pass, scored globally and per client.

Performance rule 5: inference under ``torch.inference_mode`` in large length-sorted batches
(the task adapter's ``predict``). Per-client metrics come from the same single pass, scored on
each client's rows.
"""
from __future__ import annotations

import time
from typing import Any

import numpy as np
import torch

from fednlp_bench.batching import TokenizedData
from fednlp_bench.state import TrainState


class Evaluator:
    """Loads the global weights into the worker's model and scores a tokenized split."""

    def __init__(self, task: Any, model: torch.nn.Module, params: torch.Tensor, global_params: torch.Tensor,
                 data: TokenizedData, *, batch_size: int, pad_id: int, device: torch.device,
                 state: TrainState, split: str | None = None) -> None:
        self.task, self.model, self.params, self.global_params = task, model, params, global_params
        self.data, self.batch_size, self.pad_id, self.device = data, batch_size, pad_id, device
        self.state = state
        self.split = split  # "val" or "test": written into per-round rows
        self.rows = np.arange(len(data))

    def load(self, weights: torch.Tensor | None = None) -> None:
        """Put ``weights`` (default: the global weights) into the model."""
        self.params.copy_(self.global_params if weights is None else weights)

    def predict(self, weights: torch.Tensor | None = None) -> dict[int, Any]:
        self.load(weights)
        return self.task.predict(self.model, self.data, self.rows, self.batch_size, self.pad_id, self.device)

    def evaluate(self, round: int) -> dict[str, Any]:
        """``{"round": round, ["split": ...,] **metrics}`` of the global model."""
        t0 = time.perf_counter()
        metrics = self.task.score(self.predict(), self.data, self.rows)
        self.state.costs.eval_seconds += time.perf_counter() - t0
        return {"round": round, **({"split": self.split} if self.split else {}), **metrics}

    def per_client(self, client_rows: list[np.ndarray],
                   weights: torch.Tensor | None = None) -> tuple[dict[str, Any], dict[str, Any]]:
        """Global metrics and per-client metrics (clients with rows) from one inference pass."""
        t0 = time.perf_counter()
        preds = self.predict(weights)
        final = self.task.score(preds, self.data, self.rows)
        per_client = {str(cid): {**self.task.score(preds, self.data, rows), "n_test": int(len(rows))}
                      for cid, rows in enumerate(client_rows) if len(rows)}
        self.state.costs.eval_seconds += time.perf_counter() - t0
        return final, per_client
