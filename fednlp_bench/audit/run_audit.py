"""Membership audit of a finished run's global model (option ``privacy.audit=true``).

Cheap by design (one inference pass over the training rows): the
loss-threshold attack (Yeom et al. 2018) with

* example level: members = training rows of clients that took part in some
  round, non-members = the test rows (never trained on);
* client level ("was this client in training?"): members = clients that took
  part, non-members = clients never sampled (the cohorts recorded in the training state);
  a client's score is the mean score of its training rows. ``None`` when every
  client took part.

The reference-model attack (offline LiRA) needs extra training runs and is
available as :func:`fednlp_bench.audit.membership_inference.lira_offline_scores`.
"""
from __future__ import annotations

from typing import Any

import numpy as np
import torch

from fednlp_bench import peft_methods
from fednlp_bench.audit import membership_inference as mia
from fednlp_bench.audit.rows import append_rows
from fednlp_bench.audit.view import FinishedRun


def example_losses(
    model: torch.nn.Module,
    task: Any,
    data: Any,
    rows: np.ndarray,
    pad_id: int,
    device: torch.device,
    batch_size: int,
) -> np.ndarray:
    """Per-example losses of ``model`` on ``rows`` of a tokenized split (the task's "example_loss")."""
    require(task, "example_loss", "the loss-threshold attack and canary exposure")
    return np.asarray(task.example_losses(model, data, np.asarray(rows), batch_size, pad_id, device))


def require(task: Any, capability: str, purpose: str) -> None:
    """Raise a ConfigError naming ``capability`` if ``task`` does not declare it."""
    from fednlp_bench.errors import ConfigError

    if not task.supports(capability):
        raise ConfigError(f"{purpose} needs the task capability '{capability}', which task '{task.name}' does "
                          f"not declare (see docs/tasks.md)")


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


def run_membership_audit(run: FinishedRun) -> dict[str, Any]:
    """:func:`membership_audit` of a finished run's global model."""
    import time

    t0 = time.perf_counter()
    run.load_global()
    out = membership_audit(run.model, run.task, run.train_data, run.test_data, run.client_train, run.participated,
                           run.pad_id, run.device, run.eval_batch_size)
    out["seconds"] = round(time.perf_counter() - t0, 3)
    return out


# --------------------------------------------------------------------------- offline LiRA
LIRA_CALIBRATION_NOTE = (
    "Offline LiRA assumes the reference (OUT) models are trained like the target. Here they are trained "
    "centrally with plain AdamW (no DP, no federated averaging) on {ref_rows} held-out rows, while the target "
    "was trained {how} on {member_rows} member rows; they see each row as often as the target saw a member row "
    "on average ({passes:.2f} passes), but their OUT distribution is only approximately the target's, so "
    "AUC and TPR at low FPR are indicative, not calibrated."
)


def lira_audit(run: FinishedRun, n_reference: int) -> dict[str, Any]:
    """Offline LiRA (Carlini et al. 2022) of the final global model, for tasks with "confidence".

    The test split is halved (seeded): half A are the audited non-members, half B trains
    ``n_reference`` reference models (same architecture and initialisation recipe, plain AdamW)
    that saw neither the members nor A. Their training budget matches the target's exposure:
    as many passes over half B as the target made, on average, over each member row
    (training examples processed / member rows). Members are the training rows of
    participating clients, as in the loss attack. The record states the remaining calibration
    caveat (central training on fewer rows, no DP).
    """
    import time

    t0 = time.perf_counter()
    cfg, participated = run.cfg, run.participated
    task, test = run.task, run.test_data
    rng = np.random.default_rng([cfg.seed, 7919])
    order = rng.permutation(len(test))
    half_a, half_b = np.sort(order[: len(order) // 2]), np.sort(order[len(order) // 2 :])
    members = [c for c in range(len(run.client_train)) if participated[c] and len(run.client_train[c])]
    member_rows = np.concatenate([run.client_train[c] for c in members]).astype(np.int64)
    bs, pad, device = cfg.fl.eval_batch_size, run.pad_id, run.device
    require(task, "confidence", "offline LiRA")
    run.load_global()

    def phi(model: torch.nn.Module) -> np.ndarray:  # LiRA's statistic on members, then on half A
        return np.r_[task.example_confidences(model, run.train_data, member_rows, bs, pad, device),
                     task.example_confidences(model, test, half_a, bs, pad, device)]

    target = phi(run.model)
    passes = run.train_examples / max(len(member_rows), 1)
    steps = max(1, int(round(passes * len(half_b) / cfg.fl.batch_size)))
    reference = []
    for k in range(n_reference):
        model = _reference_model(run, half_b, steps, k)
        reference.append(phi(model))
        del model
    scores = mia.lira_offline_scores(target, np.stack(reference))
    out = mia.roc_metrics(scores[: len(member_rows)], scores[len(member_rows) :])
    how = "centrally" if run.centralized else "with federated averaging"
    if cfg.privacy.user_level or cfg.privacy.sample_level:
        how += " and differential privacy"
    out.update(attack="offline LiRA (Carlini et al. 2022), global variance", reference_models=n_reference,
               reference_rows=int(len(half_b)), reference_steps=steps,
               reference_passes_per_example=round(steps * cfg.fl.batch_size / max(len(half_b), 1), 3),
               target_passes_per_member_example=round(passes, 3),
               note="non-members: half of the test split; reference models train on the other half",
               calibration_note=LIRA_CALIBRATION_NOTE.format(ref_rows=len(half_b), how=how,
                                                             member_rows=len(member_rows), passes=passes),
               seconds=round(time.perf_counter() - t0, 3))
    return out


def _reference_model(run: FinishedRun, rows: np.ndarray, steps: int, k: int) -> torch.nn.Module:
    """Reference model ``k``: fresh weights (seeded), ``steps`` AdamW steps on length-grouped batches of
    test ``rows``."""
    from fednlp_bench.batching import length_grouped_batches

    cfg, prep, task, test = run.cfg, run.prepared, run.task, run.test_data
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(cfg.seed + 1 + k)
        model = peft_methods.build_model(task, prep.model_path, prep.info, cfg.model).to(run.device)  # same PEFT
        model.train()
        opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=cfg.fl.client_lr,
                                weight_decay=cfg.fl.weight_decay)
        batch_rng = np.random.default_rng([cfg.seed, 7919, k])
        done = 0
        while done < steps:
            for b in length_grouped_batches(rows, test.lengths, cfg.fl.batch_size, batch_rng):
                batch = {name: v.to(run.device) for name, v in task.collate(test, b, run.pad_id).items()}
                model(**batch).loss.backward()
                opt.step()
                opt.zero_grad(set_to_none=True)
                done += 1
                if done == steps:
                    break
    return model


# --------------------------------------------------------------------------- canaries
def insert_canary(cfg: Any, prep: Any, client_train: list[np.ndarray], participation: np.ndarray | None
                  ) -> dict[str, Any]:
    """Append ``privacy.canaries`` copies of one canary to the training data of one client.

    The client is the one the cohort schedule will sample in most rounds (``participation``, planned
    from the seed; ties -> lowest id), so the canary is actually trained on; in the centralized
    baseline (``participation=None``) it joins the one pool.
    Mutates ``prep.train`` and ``client_train``; returns the canary's description for the audit.
    """
    from fednlp_bench.audit.canaries import make_canary

    rng = np.random.default_rng([cfg.seed, 104729])
    n_labels = len(prep.info.get("label_names", [])) or 1
    canary = make_canary(rng, length=6, label=int(rng.integers(n_labels)))
    client = 0 if participation is None else int(np.argmax(participation))
    require(prep.task, "canary_rows", "privacy.canaries")
    n = cfg.privacy.canaries
    extra = prep.task.encode_canaries([canary.prefix] * n, [canary.spaced()] * n, [canary.label] * n,
                                      prep.tokenizer, cfg.data.max_len)
    start = len(prep.train)
    prep.train = append_rows(prep.train, extra)
    client_train[client] = np.concatenate([client_train[client], np.arange(start, len(prep.train))])
    return {"canary": canary, "client": client, "rows": np.arange(start, len(prep.train))}


def canary_exposure(run: FinishedRun, inserted: dict[str, Any]) -> dict[str, Any]:
    """Rank and exposure of the true secret among ``privacy.canary_candidates`` random ones."""
    from fednlp_bench.audit.canaries import DIGITS, candidate_secrets, exposure

    canary, cfg, prep = inserted["canary"], run.cfg, run.prepared
    rng = np.random.default_rng([cfg.seed, 104729, 1])
    candidates = candidate_secrets(rng, canary, cfg.privacy.canary_candidates)
    secrets = [canary.spaced()] + [canary.spaced(s) for s in candidates]
    data = prep.task.encode_canaries([canary.prefix] * len(secrets), secrets, [canary.label] * len(secrets),
                                     prep.tokenizer, cfg.data.max_len)
    run.load_global()
    losses = example_losses(run.model, run.task, data, np.arange(len(secrets)), run.pad_id, run.device,
                            cfg.fl.eval_batch_size)
    out = exposure(float(losses[0]), losses[1:], space_size=len(DIGITS) ** len(canary.secret))
    rounds = 0 if run.centralized else int(run.participation[inserted["client"]])
    out.update(template=canary.template, secret_length=len(canary.secret), label=canary.label,
               copies=len(inserted["rows"]), client=inserted["client"], client_rounds=rounds,
               secret_loss=float(losses[0]), candidate_loss_median=float(np.median(losses[1:])))
    return out


# --------------------------------------------------------------------------- counterfactual fairness
def counterfactual_audit(run: FinishedRun) -> dict[str, Any] | None:
    """The gender-swap probe on the test texts, chosen by task capability (``encode_texts`` and one of
    ``class_logits``: flip rate, ``sequence_logprob``: log-likelihood gap, ``word_tags``: tag changes);
    ``None`` where none applies."""
    import time

    from fednlp_bench.audit import counterfactual_more as more
    from fednlp_bench.audit.counterfactual import counterfactual_probe

    task, cfg, prep = run.task, run.cfg, run.prepared
    kinds = [k for k in ("class_logits", "sequence_logprob", "word_tags") if task.supports(k)]
    if not kinds or not task.supports("encode_texts"):
        return None
    t0 = time.perf_counter()
    texts = task.texts_for_embedding(prep.dsd["test"])
    run.load_global()
    bs, pad, dev = cfg.fl.eval_batch_size, run.pad_id, run.device

    def encode(batch_texts: list[str]):
        return task.encode_texts(batch_texts, np.zeros(len(batch_texts), dtype=np.int64), prep.tokenizer,
                                 cfg.data.max_len), np.arange(len(batch_texts))

    def probabilities(batch_texts: list[str]) -> np.ndarray:
        z = task.logits(run.model, *encode(batch_texts), bs, pad, dev)
        p = np.exp(z - z.max(1, keepdims=True))
        return p / p.sum(1, keepdims=True)

    def tags(batch_texts: list[str]) -> list[np.ndarray]:
        data, rows = encode(batch_texts)
        pred = task.predict(run.model, data, rows, bs, pad, dev)
        return [np.asarray(pred[int(r)]) for r in rows]

    def visible(original: str, swapped: str) -> bool:  # the swap survives truncation to data.max_len
        ids = prep.tokenizer([original, swapped], truncation=True, max_length=cfg.data.max_len)["input_ids"]
        return ids[0] != ids[1]

    if kinds[0] == "class_logits":
        out = counterfactual_probe(texts, probabilities, keep=visible)
    elif kinds[0] == "sequence_logprob":
        out = more.loglik_probe(texts, lambda t: task.sequence_logprobs(run.model, *encode(t), bs, pad, dev),
                                keep=visible)
    else:
        out = more.tag_probe(texts, tags, keep=visible)
    out["seconds"] = round(time.perf_counter() - t0, 3)
    out["note"] = f"affected = test texts with a listed term inside the first {cfg.data.max_len} tokens"
    return out
