"""Canary extraction wired into a run (``privacy.canaries=N --set privacy.canary_attack=invert``).

Before training, :func:`insert_canaries` adds ``privacy.canary_count`` canaries
(:mod:`fednlp_bench.audit.canary_inversion`), each ``privacy.canaries`` times, to the
data of the client the cohort schedule samples in most rounds (as the exposure canary; the
centralized baseline has one pool), so the canaries belong to one user, the
case user-level DP is meant to cover. After training, :func:`canary_inversion_audit` runs
the attack the task's capabilities allow on the final global model.

``privacy.model_dropout`` (:func:`set_model_dropout`) is the dropout defence the paper
evaluates: the probability of every dropout layer of the model while training.
"""
from __future__ import annotations

import time
from typing import Any

import numpy as np
import torch

from fednlp_bench.audit.canaries import DIGITS, Canary
from fednlp_bench.audit.canary_inversion import (SECRET_LENGTH, alphabet_ids, invert_classifier, invert_lm,
                                                 make_canaries, score_guesses)
from fednlp_bench.audit.rows import append_rows
from fednlp_bench.batching import TokenizedData


def set_model_dropout(model: torch.nn.Module, p: float | None) -> int:
    """Set the probability of every ``nn.Dropout`` of ``model`` (hidden and attention dropout of a BERT);
    ``None`` keeps the checkpoint's. Returns how many layers were set."""
    if p is None:
        return 0
    layers = [m for m in model.modules() if isinstance(m, torch.nn.Dropout)]
    for m in layers:
        m.p = float(p)
    return len(layers)


def insert_canaries(cfg: Any, task: Any, train: TokenizedData, client_train: list[np.ndarray], tokenizer: Any,
                    n_labels: int, client: int) -> tuple[TokenizedData, list[np.ndarray], dict[str, Any]]:
    """``(train + canary rows, client rows, what was inserted)``; only ``client``'s rows change."""
    rng = np.random.default_rng([cfg.seed, 104729, 2])
    labelled = task.supports("embedding_logits") and not task.supports("next_token_logits")
    canaries = make_canaries(rng, cfg.privacy.canary_count, n_labels if labelled else 1)
    copies = cfg.privacy.canaries
    prefixes = [c.prefix for c in canaries for _ in range(copies)]
    secrets = [c.spaced() for c in canaries for _ in range(copies)]
    labels = [c.label for c in canaries for _ in range(copies)]
    extra = task.encode_canaries(prefixes, secrets, labels, tokenizer, cfg.data.max_len)
    start = len(train)
    train = append_rows(train, extra)
    rows = [np.asarray(r) for r in client_train]
    rows[client] = np.concatenate([rows[client], np.arange(start, len(train))])
    return train, rows, {"canaries": canaries, "client": client, "copies": copies}


def canary_inversion_audit(model: torch.nn.Module, task: Any, tokenizer: Any, inserted: dict[str, Any],
                           cfg: Any, device: torch.device, client_rounds: int) -> dict[str, Any]:
    """Reconstruct every inserted canary's secret from ``model`` (the final global weights loaded)."""
    t0 = time.perf_counter()
    canaries: list[Canary] = inserted["canaries"]
    alphabet_ids(tokenizer)  # every secret symbol must be one token
    if task.supports("next_token_logits"):
        guesses = invert_lm(task, model, tokenizer, canaries, device)
        attack = "prefix-conditioned decoding: greedy and beam (width 5) over the digits, greedy over all tokens"
    else:
        guesses = {"relaxed_onehot": invert_classifier(task, model, tokenizer, canaries, device, seed=cfg.seed)}
        attack = "relaxed one-hot inversion of the label loss over the digits, projected to tokens (3 restarts)"
    return {
        "attack": attack,
        "n_canaries": len(canaries),
        "copies": inserted["copies"],
        "secret_length": SECRET_LENGTH,
        "alphabet": DIGITS,
        "client": inserted["client"],
        "client_rounds": client_rounds,
        "methods": {name: score_guesses(canaries, g) for name, g in guesses.items()},
        "chance": {"reconstruction_rate": float(len(DIGITS)) ** -SECRET_LENGTH,
                   "per_digit_accuracy": 1.0 / len(DIGITS)},
        "canaries": [{"prefix": c.prefix, "label": c.label, "secret": c.secret,
                      "guesses": {name: g[i] for name, g in guesses.items()}} for i, c in enumerate(canaries)],
        "seconds": round(time.perf_counter() - t0, 3),
    }
