"""Membership inference audits of a trained model, at example and at client level.

* Loss threshold (Yeom, Giacomelli, Fredrikson & Jha 2018, "Privacy Risk in
  Machine Learning: Analyzing the Connection to Overfitting"): members have
  lower loss; the score is ``-loss``.
* Offline LiRA (Carlini, Chien, Nasr, Song, Terzis & Tramer 2022, "Membership
  Inference Attacks From First Principles"): a few reference models trained
  on data *disjoint* from the audited examples give, per example, the
  distribution of the logit-scaled confidence ``phi = log p_y / (1 - p_y)``
  when the example is OUT; the score is how far the target model's ``phi``
  lies above it (one-sided Gaussian likelihood; with few reference models a
  global variance is more stable, as the paper recommends).
* Client level ("was this client in training?"): an example-level score
  averaged over each client's examples.

Metrics follow Carlini et al. 2022: ROC-AUC and the TPR at low FPR (1%, 0.1%).
With ``m`` non-members the smallest resolvable FPR is ``1/m``; results carry
the counts so a reader can tell.
"""
from __future__ import annotations

from typing import Any, Iterable, Sequence

import numpy as np


def logit_confidence(logits: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """``phi = log p_y - log(1 - p_y)`` computed stably from logits (n, K)."""
    z = np.asarray(logits, dtype=np.float64)
    y = np.asarray(labels, dtype=np.int64)
    zy = z[np.arange(len(z)), y]
    others = z.copy()
    others[np.arange(len(z)), y] = -np.inf
    m = others.max(1, keepdims=True)
    lse_others = m[:, 0] + np.log(np.exp(others - m).sum(1))
    return zy - lse_others


def cross_entropy(logits: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """Per-example cross-entropy from logits (n, K)."""
    z = np.asarray(logits, dtype=np.float64)
    y = np.asarray(labels, dtype=np.int64)
    m = z.max(1, keepdims=True)
    lse = m[:, 0] + np.log(np.exp(z - m).sum(1))
    return lse - z[np.arange(len(z)), y]


def loss_scores(losses: np.ndarray) -> np.ndarray:
    """Yeom et al. 2018: lower loss -> more likely a member."""
    return -np.asarray(losses, dtype=np.float64)


def lira_offline_scores(target_phi: np.ndarray, reference_phi: np.ndarray, global_variance: bool = True) -> np.ndarray:
    """Offline LiRA scores from the target's ``phi`` (n,) and OUT reference models' ``phi`` (R, n).

    Score = log Pr[Z <= phi_target], Z ~ N(mu_out, sigma_out^2): large when the
    target model is more confident on the example than models that never saw it.
    """
    from scipy.stats import norm

    ref = np.atleast_2d(np.asarray(reference_phi, dtype=np.float64))
    mu = ref.mean(0)
    if global_variance or ref.shape[0] < 2:
        sd = np.full_like(mu, ref.std() if ref.shape[0] < 2 else np.sqrt(ref.var(0, ddof=1).mean()))
    else:
        sd = ref.std(0, ddof=1)
    sd = np.maximum(sd, 1e-6)
    return norm.logcdf((np.asarray(target_phi, dtype=np.float64) - mu) / sd)


def roc_metrics(member_scores: Iterable[float], nonmember_scores: Iterable[float],
                fprs: Sequence[float] = (0.01, 0.001)) -> dict[str, Any]:
    """ROC-AUC and TPR at each FPR in ``fprs`` (higher score = "member")."""
    from sklearn.metrics import roc_auc_score, roc_curve

    mem = np.asarray(list(member_scores), dtype=np.float64)
    non = np.asarray(list(nonmember_scores), dtype=np.float64)
    out: dict[str, Any] = {"n_members": int(len(mem)), "n_nonmembers": int(len(non))}
    if len(mem) == 0 or len(non) == 0:
        out["auc"] = None
        for f in fprs:
            out[f"tpr_at_{f:g}_fpr"] = None
        return out
    y = np.r_[np.ones(len(mem)), np.zeros(len(non))]
    s = np.r_[mem, non]
    out["auc"] = float(roc_auc_score(y, s))
    fpr, tpr, _ = roc_curve(y, s)
    for f in fprs:
        ok = fpr <= f
        out[f"tpr_at_{f:g}_fpr"] = float(tpr[ok].max()) if ok.any() else 0.0
    return out


def client_scores(example_scores: np.ndarray, groups: Sequence[np.ndarray]) -> np.ndarray:
    """Mean example score per group (client); empty groups are dropped."""
    s = np.asarray(example_scores, dtype=np.float64)
    return np.array([s[np.asarray(g)].mean() for g in groups if len(g)])


def audit(
    member_scores: np.ndarray,
    nonmember_scores: np.ndarray,
    member_groups: Sequence[np.ndarray] | None = None,
    nonmember_groups: Sequence[np.ndarray] | None = None,
) -> dict[str, Any]:
    """Example-level metrics, plus client-level ones when groups (indices into the score arrays) are given."""
    out = {"example": roc_metrics(member_scores, nonmember_scores)}
    if member_groups is not None and nonmember_groups is not None:
        out["client"] = roc_metrics(client_scores(member_scores, member_groups),
                                    client_scores(nonmember_scores, nonmember_groups))
    return out
