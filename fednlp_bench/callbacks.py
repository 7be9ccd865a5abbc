"""Callbacks: everything around training that is not training, as explicit hook points.

A run is a trainer (:class:`fednlp_bench.engine.Simulator` for FL,
:class:`fednlp_bench.centralized.CentralizedTrainer` for the reference) plus a list of
callbacks. The trainer calls, in list order:

* :meth:`Callback.on_run_start` once, before the first round it trains (also after a resume);
* :meth:`Callback.on_round_end` after every round (the evaluation schedule, progress,
  checkpoints...);
* :meth:`Callback.on_evaluate` whenever the global model was scored (tracking, progress);
* :meth:`Callback.on_run_end` once training is over.

Stateful callbacks expose ``state_dict()``/``load_state_dict()`` and are part of the checkpoint
tree. Audits and probes run on the finished model instead (:mod:`fednlp_bench.audit.view`).
"""
from __future__ import annotations

import logging
from typing import Any

from fednlp_bench.evaluation import Evaluator

log = logging.getLogger(__name__)


class Callback:
    """Base class: every hook does nothing."""

    name = "callback"

    def on_run_start(self, trainer: Any) -> None:
        pass

    def on_round_end(self, trainer: Any, round: int) -> None:
        pass

    def on_evaluate(self, trainer: Any, row: dict[str, Any]) -> None:
        pass

    def on_run_end(self, trainer: Any) -> None:
        pass

    def state_dict(self) -> dict[str, Any]:
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        pass


class CallbackList:
    """Dispatches each hook to every callback, in order."""

    def __init__(self, callbacks: list[Callback] | None = None) -> None:
        self.callbacks = list(callbacks or [])

    def __iter__(self):
        return iter(self.callbacks)

    def append(self, callback: Callback) -> None:
        self.callbacks.append(callback)

    def run_start(self, trainer: Any) -> None:
        for c in self.callbacks:
            c.on_run_start(trainer)

    def round_end(self, trainer: Any, round: int) -> None:
        for c in self.callbacks:
            c.on_round_end(trainer, round)

    def evaluated(self, trainer: Any, row: dict[str, Any]) -> None:
        for c in self.callbacks:
            c.on_evaluate(trainer, row)

    def run_end(self, trainer: Any) -> None:
        for c in self.callbacks:
            c.on_run_end(trainer)

    def state_dict(self) -> dict[str, Any]:
        return {c.name: c.state_dict() for c in self.callbacks}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        for c in self.callbacks:
            if c.name in state:
                c.load_state_dict(state[c.name])


class EvaluationSchedule(Callback):
    """Scores the global model on the validation split before training (round 0), every ``every``
    rounds and after the last; never on the test split, so no per-round choice can read it.

    Only the main rank evaluates; rows go to ``state.per_round`` and to ``on_evaluate``. With
    ``keep_best`` it also keeps a copy of the weights of the best round by ``primary`` (ties: the
    earliest), for a test evaluation of that model at the end. ``evaluator=None`` (no validation
    split) evaluates nothing.
    """

    name = "evaluation"

    def __init__(self, evaluator: Evaluator | None, every: int, rounds: int, main: bool = True,
                 primary: str | None = None, higher_is_better: bool = True, keep_best: bool = False) -> None:
        self.evaluator, self.every, self.rounds, self.main = evaluator, every, rounds, main
        self.primary, self.higher, self.keep_best = primary, higher_is_better, keep_best
        self.initial: dict[str, Any] = {}
        self.best_round: int | None = None
        self.best_value: float | None = None
        self.best_weights: Any = None

    def _active(self) -> bool:
        return self.main and self.evaluator is not None

    def on_run_start(self, trainer: Any) -> None:
        if self._active() and trainer.state.round == 0:
            self.initial = self.evaluator.evaluate(0)
            trainer.callbacks.evaluated(trainer, self.initial)

    def on_round_end(self, trainer: Any, round: int) -> None:
        if self._active() and (round % self.every == 0 or round == self.rounds):
            row = self.evaluator.evaluate(round)
            trainer.state.per_round.append(row)
            self._track_best(trainer, row)
            trainer.callbacks.evaluated(trainer, row)

    def _track_best(self, trainer: Any, row: dict[str, Any]) -> None:
        value = row.get(self.primary)
        if not self.keep_best or value is None:
            return
        better = self.best_value is None or (value > self.best_value if self.higher else value < self.best_value)
        if better:
            self.best_round, self.best_value = row["round"], float(value)
            self.best_weights = trainer.global_params.detach().clone()

    def state_dict(self) -> dict[str, Any]:
        state: dict[str, Any] = {"initial": self.initial}
        if self.best_weights is not None:
            state.update(best_round=self.best_round, best_value=self.best_value, best_weights=self.best_weights)
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.initial = dict(state.get("initial", {}))
        if "best_weights" in state:
            self.best_round, self.best_value = int(state["best_round"]), float(state["best_value"])
            self.best_weights = state["best_weights"]


class ProgressBar(Callback):
    """A tqdm bar over rounds with the latest primary metric."""

    name = "progress"

    def __init__(self, total: int, desc: str, primary: str) -> None:
        from tqdm.auto import tqdm

        self.bar = tqdm(total=total, desc=desc, unit="round", leave=False)
        self.primary = primary

    def on_run_start(self, trainer: Any) -> None:
        self.bar.update(trainer.state.round - self.bar.n)

    def on_evaluate(self, trainer: Any, row: dict[str, Any]) -> None:
        if self.primary in row:
            self.bar.set_postfix({self.primary: f"{row[self.primary]:.4f}"})

    def on_round_end(self, trainer: Any, round: int) -> None:
        self.bar.update(1)

    def close(self) -> None:
        self.bar.close()

    def on_run_end(self, trainer: Any) -> None:
        self.close()


class Tracking(Callback):
    """Logs every evaluation to the experiment tracker (Weights & Biases)."""

    name = "tracking"

    def __init__(self, tracker: Any) -> None:
        self.tracker = tracker

    def on_evaluate(self, trainer: Any, row: dict[str, Any]) -> None:
        self.tracker.log(row)


class CostReduction(Callback):
    """Sums the per-rank client costs over ``torchrun`` ranks once training is done (every rank)."""

    name = "cost_reduction"

    def __init__(self, world: Any, device: Any) -> None:
        self.world, self.device = world, device

    def on_run_end(self, trainer: Any) -> None:
        from fednlp_bench.engine import reduce_costs

        reduce_costs(trainer.state, self.world, self.device)


class FinalEvaluation(Callback):
    """The test split, used once: the final global model on the whole test split and on each
    client's test rows; with ``schedule.keep_best``, also the best-validation round's model
    (recorded as such, never in place of the final one)."""

    name = "final_evaluation"

    def __init__(self, evaluator: Evaluator, client_test: list, schedule: EvaluationSchedule | None = None) -> None:
        self.evaluator, self.client_test, self.schedule = evaluator, client_test, schedule
        self.final: dict[str, Any] = {}
        self.per_client: dict[str, Any] = {}
        self.best_val: dict[str, Any] | None = None

    def on_run_end(self, trainer: Any) -> None:
        self.final, self.per_client = self.evaluator.per_client(self.client_test)
        s = self.schedule
        if s is not None and s.keep_best and s.best_weights is not None:
            test, _ = self.evaluator.per_client([], s.best_weights)
            self.best_val = {"round": s.best_round, "val": s.best_value, "test": test}
            self.evaluator.load()
