"""Which task capabilities the audit, probe and mitigation options need, checked before a run starts.

Audits never ask for a task by name: each option lists the capabilities
(``tasks.base.CAPABILITIES``) it calls, and a task that does not declare one
stops the run up front with one line naming the option and the missing
capability. Probes that simply do not apply to a task (the counterfactual probe
on extractive QA) are skipped instead and record ``null``.

The run calls :func:`require` up front (``fednlp_bench.run.validate_up_front``), with the other
checks that need a registry, before any data is prepared; the options' own types and ranges are
declared in ``fednlp_bench.config``.
"""
from __future__ import annotations

from typing import Any

from fednlp_bench.errors import ConfigError

#: each need is a tuple of alternatives: the task must declare at least one of them
Need = tuple[str, ...]


def needs(cfg: Any) -> dict[str, list[Need]]:
    """Option -> the capabilities it needs (each entry: alternatives, one suffices)."""
    pv, fair = cfg.privacy, cfg.fairness
    out: dict[str, list[Need]] = {}
    if pv.audit:
        out["privacy.audit"] = [("example_loss",)]
    if pv.audit_reference_models:
        out["privacy.audit_reference_models"] = [("confidence",)]
    if pv.canaries and pv.canary_attack == "exposure":
        out["privacy.canaries"] = [("canary_rows",), ("example_loss",)]
    if pv.canaries and pv.canary_attack == "invert":
        out["privacy.canary_attack=invert"] = [("canary_rows",), ("next_token_logits", "embedding_logits")]
    if fair.cda:
        out["fairness.cda"] = [("counterfactual_copies",)]
    if fair.sensitivity:
        out["fairness.sensitivity"] = [("embedding_logits",), ("encode_texts",)]
    if fair.intrinsic:
        out["fairness.intrinsic"] = [("encoder",)]
    return out


def require(cfg: Any) -> None:
    """Raise :class:`ConfigError` if ``cfg``'s task lacks a capability one of its options needs."""
    wanted = needs(cfg)
    if not wanted:
        return
    from fednlp_bench import tasks

    task = tasks.get(cfg.task)
    for option, alternatives in wanted.items():
        for need in alternatives:
            if not any(task.supports(c) for c in need):
                what = " or ".join(f"'{c}'" for c in need)
                declared = ", ".join(sorted(task.capabilities)) or "none"
                raise ConfigError(f"{option} needs the task capability {what}, which task '{cfg.task}' does "
                                  f"not declare (it declares: {declared}; see docs/tasks.md)")
