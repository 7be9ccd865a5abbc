"""A read-only view of a finished run: what audits and probes may look at, and nothing else.

Audits (membership inference, LiRA, canaries) and probes (fairness, counterfactuals) run after
training on the final global model. They get this view instead of the trainer, so they cannot
change the run they measure, and they read each round's cohort from the recorded training
state instead of replaying the sampler.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

import numpy as np
import torch

from fednlp_bench.batching import TokenizedData


@dataclass(frozen=True)
class FinishedRun:
    """The finished run. Call :meth:`load_global` before using ``model``: other audits may have
    left other weights in it (e.g. while scoring canaries)."""

    cfg: Any  # the RunConfig
    task: Any
    tokenizer: Any
    prepared: Any  # fednlp_bench.run.Prepared: the dataset dict, model path, label info
    model: torch.nn.Module
    train_data: TokenizedData
    test_data: TokenizedData
    client_train: list[np.ndarray]
    client_test: list[np.ndarray]
    participation: np.ndarray  # rounds each client was sampled in (all ones for the centralized pool)
    centralized: bool
    pad_id: int
    device: torch.device
    _load_global: Callable[[], None]
    train_examples: int = 0  # examples the run trained on, all ranks (LiRA sizes its reference models by it)

    def load_global(self) -> None:
        """Put the final global weights into ``model``."""
        self._load_global()

    @property
    def participated(self) -> np.ndarray:
        """Boolean per client: was it sampled in some round."""
        return self.participation > 0

    @property
    def eval_batch_size(self) -> int:
        return self.cfg.fl.eval_batch_size
