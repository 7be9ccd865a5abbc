"""What changes over a training run, in one tree: round, metrics so far, costs, failures, cohorts.

A checkpoint holds exactly :meth:`TrainState.state_dict` plus the other components' states
(weights, algorithm, privacy, callbacks). Each round's cohort is recorded here once, when it is
drawn, and privacy accounting and audits read it from here: nothing replays the sampler later.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np


@dataclass
class Costs:
    client_compute_seconds: float = 0.0
    train_seconds: float = 0.0  # wall time of the round loops, evaluation excluded
    eval_seconds: float = 0.0
    bytes_up: int = 0
    bytes_down: int = 0
    train_examples: int = 0
    train_tokens: int = 0
    padded_tokens: int = 0
    local_steps: int = 0
    dropped_clients: int = 0  # sampled clients that failed to report (fl.dropout)

    def count_batch(self, lengths: np.ndarray) -> None:
        """One local batch of sequences of these (unpadded) lengths."""
        self.train_examples += len(lengths)
        self.train_tokens += int(lengths.sum())
        self.padded_tokens += int(lengths.max(initial=0)) * len(lengths)  # (a DP-SGD Poisson batch may be empty)


@dataclass
class Failure:
    round: int
    client: int
    reason: str


@dataclass
class Cohort:
    """One round's clients: ``sampled`` by the sampler, of which ``dropped`` failed to report;
    ``eligible``: how many clients held data (could be sampled) when it was drawn, the population
    user-level DP's sampling rate is over (None in checkpoints written before it was recorded)."""

    round: int
    sampled: list[int]
    dropped: list[int]
    eligible: int | None = None

    @property
    def reporting(self) -> list[int]:
        gone = set(self.dropped)
        return [c for c in self.sampled if c not in gone]


@dataclass
class TrainState:
    """Everything about the run's progress that a checkpoint must hold (besides the weights)."""

    round: int = 0
    per_round: list[dict[str, Any]] = field(default_factory=list)
    failures: list[Failure] = field(default_factory=list)
    costs: Costs = field(default_factory=Costs)
    cohorts: list[Cohort] = field(default_factory=list)

    def participation(self, n_clients: int) -> np.ndarray:
        """Rounds in which each client was sampled (dropped clients count: an upper bound for privacy)."""
        counts = np.zeros(n_clients, dtype=np.int64)
        for cohort in self.cohorts:
            counts[np.asarray(cohort.sampled, dtype=np.int64)] += 1
        return counts

    def state_dict(self) -> dict[str, Any]:
        return {"round": self.round, "per_round": self.per_round, "failures": [asdict(f) for f in self.failures],
                "costs": asdict(self.costs), "cohorts": [asdict(c) for c in self.cohorts]}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.round = int(state["round"])
        self.per_round = list(state["per_round"])
        self.failures = [Failure(**f) for f in state["failures"]]
        self.costs = Costs(**state["costs"])
        self.cohorts = [Cohort(**c) for c in state.get("cohorts", [])]


def client_seed(seed: int, round: int, client: int) -> int:
    """Torch seed of one client's local training (dropout), independent of ranks."""
    return int(np.random.SeedSequence([seed, round, client, 0xC11E]).generate_state(1)[0])
