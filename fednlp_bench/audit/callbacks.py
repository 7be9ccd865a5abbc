"""Audits and probes as run-end callbacks: each measures the finished model and adds a record section.

Each one runs on the main rank after training, on a :class:`~fednlp_bench.audit.view.FinishedRun`
(the ``finished(trainer)`` function the run hands them builds it), and keeps its result in
``sections``: ``{record path: value}``, merged into the result record by
:func:`fednlp_bench.record.build_record`. A new audit is one class here (or in a plugin) plus
one line where the run assembles its callbacks.
"""
from __future__ import annotations

from typing import Any, Callable

from fednlp_bench.audit.view import FinishedRun
from fednlp_bench.callbacks import Callback, FinalEvaluation


class RunEndAudit(Callback):
    """Base class: :meth:`measure` the finished run once; ``sections`` holds what the record gets."""

    def __init__(self, finished: Callable[[Any], FinishedRun]) -> None:
        self.finished = finished
        self.sections: dict[tuple[str, ...], Any] = {}

    def on_run_end(self, trainer: Any) -> None:
        self.sections = self.measure(self.finished(trainer))

    def measure(self, run: FinishedRun) -> dict[tuple[str, ...], Any]:
        raise NotImplementedError


class ClientFairness(Callback):
    """The distribution of the primary metric over clients (mean, std, worst 10%, Gini)."""

    name = "client_fairness"

    def __init__(self, final: FinalEvaluation, primary: str) -> None:
        self.final, self.primary = final, primary
        self.sections: dict[tuple[str, ...], Any] = {}

    def on_run_end(self, trainer: Any) -> None:
        from fednlp_bench.audit.fairness import client_fairness

        self.sections = {("metrics", "fairness"): client_fairness(self.final.per_client, self.primary)}


class MembershipAudit(RunEndAudit):
    """Loss-threshold membership inference, plus offline LiRA with ``reference_models`` > 0."""

    name = "membership_audit"

    def __init__(self, finished: Callable[[Any], FinishedRun], reference_models: int) -> None:
        super().__init__(finished)
        self.reference_models = reference_models

    def measure(self, run: FinishedRun) -> dict[tuple[str, ...], Any]:
        from fednlp_bench.audit.run_audit import lira_audit, run_membership_audit

        audit = run_membership_audit(run)
        if self.reference_models:
            audit["lira"] = lira_audit(run, self.reference_models)
        return {("audit",): audit}


class CanaryAudit(RunEndAudit):
    """Canary exposure: :meth:`insert` when the run's data are assembled, measured at run end."""

    name = "canary_audit"

    def __init__(self, finished: Callable[[Any], FinishedRun]) -> None:
        super().__init__(finished)
        self.inserted: dict[str, Any] | None = None

    def insert(self, cfg: Any, prepared: Any, client_train: list, participation: Any) -> None:
        """Add the canary copies to one client's training rows (mutates ``prepared`` and ``client_train``)."""
        from fednlp_bench.audit.run_audit import insert_canary

        self.inserted = insert_canary(cfg, prepared, client_train, participation)

    def measure(self, run: FinishedRun) -> dict[tuple[str, ...], Any]:
        from fednlp_bench.audit.run_audit import canary_exposure

        return {("audit", "canary"): canary_exposure(run, self.inserted)}


class CounterfactualProbe(RunEndAudit):
    """The gender-swap probe on the test texts (tasks that can encode texts and give logits)."""

    name = "counterfactual_probe"

    def measure(self, run: FinishedRun) -> dict[tuple[str, ...], Any]:
        from fednlp_bench.audit.run_audit import counterfactual_audit

        return {("metrics", "counterfactual"): counterfactual_audit(run)}
