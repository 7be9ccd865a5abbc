"""Membership audit of a finished run's global model (option ``privacy.audit=true``).

Cheap by design (one inference pass over the training rows): the
loss-threshold attack (Yeom et al. 2018) with

* example level: members = training rows of clients that took part in some
  round, non-members = the test rows (never trained on);
* client level ("was this client in training?"): members = clients that took
  part, non-members = clients never sampled (cohorts replayed from the seed);
  a client's score is the mean score of its training rows. ``None`` when every
  client took part.

The reference-model attack (offline LiRA) needs extra training runs and is
available as :func:`fednlp_bench.audit.membership_inference.lira_offline_scores`.
"""
from __future__ import annotations

from typing import Any, Callable

import numpy as np
import torch

from fednlp_bench.audit import membership_inference as mia
from fednlp_bench.batching import eval_batches


def example_losses(
    model: torch.nn.Module,
    task: Any,
    data: Any,
    rows: np.ndarray,
    pad_id: int,
    device: torch.device,
    batch_size: int,
    loss_fn: Callable | None = None,
) -> np.ndarray:
    """Per-example losses of ``model`` on ``rows`` of a tokenized split (eval mode, no gradients)."""
    from fednlp_bench.privacy.per_sample import per_example_loss

    loss_fn = loss_fn or getattr(task, "per_example_loss", None) or per_example_loss
    out = np.empty(len(rows))
    position = {int(r): i for i, r in enumerate(rows)}
    was_training = model.training
    model.eval()
    try:
        with torch.inference_mode():
            for b in eval_batches(np.asarray(rows), data.lengths, batch_size):
                batch = {k: v.to(device) for k, v in task.collate(data, b, pad_id).items()}
                losses = loss_fn(model, batch).float().cpu().numpy()
                out[[position[int(r)] for r in b]] = losses
    finally:
        model.train(was_training)
    return out


def membership_audit(
    model: torch.nn.Module,
    task: Any,
    train: Any,
    test: Any,
    client_train: list[np.ndarray],
    participated: np.ndarray,
    pad_id: int,
    device: torch.device,
    batch_size: int,
) -> dict[str, Any]:
    """Loss-threshold membership inference at example and client level (see module doc)."""
    member_clients = [c for c in range(len(client_train)) if participated[c] and len(client_train[c])]
    outside = [c for c in range(len(client_train)) if not participated[c] and len(client_train[c])]
    train_rows = np.concatenate([client_train[c] for c in member_clients + outside]) if client_train else np.zeros(0)
    train_rows = train_rows.astype(np.int64)
    scores = mia.loss_scores(example_losses(model, task, train, train_rows, pad_id, device, batch_size))
    test_scores = mia.loss_scores(
        example_losses(model, task, test, np.arange(len(test)), pad_id, device, batch_size))
    groups, start = {}, 0
    for c in member_clients + outside:
        groups[c] = np.arange(start, start + len(client_train[c]))
        start += len(client_train[c])
    member_idx = np.concatenate([groups[c] for c in member_clients]) if member_clients else np.zeros(0, dtype=int)
    out: dict[str, Any] = {
        "attack": "loss threshold (Yeom et al. 2018)",
        "example": mia.roc_metrics(scores[member_idx], test_scores),
        "example_note": "members: training rows of participating clients; non-members: test rows",
        "client": None,
        "n_clients_never_sampled": len(outside),
    }
    if outside:
        out["client"] = mia.roc_metrics(mia.client_scores(scores, [groups[c] for c in member_clients]),
                                        mia.client_scores(scores, [groups[c] for c in outside]))
    return out


def participation_counts(cfg: Any, n_clients: int, sizes_at: Callable[[int], np.ndarray]) -> np.ndarray:
    """How many rounds each client was sampled in, replaying the cohorts from (seed, round)."""
    from fednlp_bench import sampling

    counts = np.zeros(n_clients, dtype=np.int64)
    pick = sampling.get(cfg.fl.sampler)
    for r in range(1, cfg.fl.rounds + 1):
        counts[np.asarray(pick(r, np.asarray(sizes_at(r)), cfg.fl.clients_per_round,
                               sampling.round_rng(cfg.seed, r)), dtype=np.int64)] += 1
    return counts


def run_membership_audit(sim: Any, cfg: Any, centralized: bool) -> dict[str, Any]:
    """:func:`membership_audit` of a finished :class:`~fednlp_bench.engine.Simulator`'s global model."""
    import time

    t0 = time.perf_counter()
    sim.params.copy_(sim.global_params)
    n = len(sim.client_train)
    part = np.ones(n, dtype=bool) if centralized else participation_counts(cfg, n, sim.clients.sizes) > 0
    out = membership_audit(sim.model, sim.task, sim.train_data, sim.test_data, sim.client_train, part,
                           sim.pad_id, sim.device, cfg.fl.eval_batch_size)
    out["seconds"] = round(time.perf_counter() - t0, 3)
    return out
