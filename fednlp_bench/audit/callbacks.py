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


# --------------------------------------------------------------------------- canary extraction, fairness probes
class CanaryInversion(RunEndAudit):
    """Canary extraction (``privacy.canary_attack=invert``): :meth:`insert` ``privacy.canary_count``
    canaries into one client before training, reconstruct their secrets from the final model
    (:mod:`fednlp_bench.audit.inversion_audit`)."""

    name = "canary_inversion"

    def __init__(self, finished: Callable[[Any], FinishedRun]) -> None:
        super().__init__(finished)
        self.inserted: dict[str, Any] | None = None

    def insert(self, cfg: Any, prepared: Any, client_train: list, participation: Any) -> None:
        """Add the canaries to the client sampled in most rounds (``participation`` planned from the
        seed; ties -> lowest id; the one pool when ``None``). Mutates ``prepared`` and ``client_train``."""
        import numpy as np

        from fednlp_bench.audit.inversion_audit import insert_canaries

        client = 0 if participation is None else int(np.argmax(participation))
        n_labels = len(prepared.info.get("label_names", [])) or 1
        prepared.train, rows, self.inserted = insert_canaries(cfg, prepared.task, prepared.train, client_train,
                                                              prepared.tokenizer, n_labels, client)
        client_train[:] = rows

    def measure(self, run: FinishedRun) -> dict[tuple[str, ...], Any]:
        from fednlp_bench.audit.inversion_audit import canary_inversion_audit

        run.load_global()
        client = self.inserted["client"]
        rounds = run.cfg.fl.rounds if run.centralized else int(run.participation[client])
        return {("audit", "canary_inversion"): canary_inversion_audit(
            run.model, run.task, run.tokenizer, self.inserted, run.cfg, run.device, rounds)}


class CounterfactualAugmentation(Callback):
    """Counterfactual data augmentation (``fairness.cda``): :meth:`apply` before training, each client
    adding gender-swapped copies of its own rows (:mod:`fednlp_bench.audit.cda`); records ``fl.cda``."""

    name = "counterfactual_augmentation"

    def __init__(self) -> None:
        self.sections: dict[tuple[str, ...], Any] = {}

    def apply(self, prepared: Any, client_train: list, max_len: int) -> None:
        """Extend ``prepared.train`` and every client's rows in place."""
        from fednlp_bench.audit.cda import augment

        prepared.train, rows, summary = augment(prepared.task, prepared.dsd["train"], prepared.train, client_train,
                                                prepared.tokenizer, max_len)
        client_train[:] = rows
        self.sections = {("fl", "cda"): summary}


class PredictionSensitivity(RunEndAudit):
    """Prediction sensitivity to the gendered-term embeddings of the test texts (``fairness.sensitivity``)."""

    name = "prediction_sensitivity"

    def measure(self, run: FinishedRun) -> dict[tuple[str, ...], Any]:
        from fednlp_bench.audit.sensitivity import sensitivity_audit

        run.load_global()
        texts = run.task.texts_for_embedding(run.prepared.dsd["test"])
        return {("metrics", "prediction_sensitivity"): sensitivity_audit(
            run.model, run.task, run.tokenizer, texts, run.cfg.data.max_len, run.eval_batch_size, run.pad_id,
            run.device)}


class IntrinsicBias(RunEndAudit):
    """SEAT-style association test over the encoder's sentence representations (``fairness.intrinsic``)."""

    name = "intrinsic_bias"

    def measure(self, run: FinishedRun) -> dict[tuple[str, ...], Any]:
        from fednlp_bench.audit.seat import seat_audit

        run.load_global()
        return {("metrics", "intrinsic_bias"): seat_audit(run.model, run.task, run.tokenizer, run.device,
                                                          run.cfg.seed)}
