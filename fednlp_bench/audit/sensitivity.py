"""Prediction sensitivity of a text classifier to the protected attribute (``fairness.sensitivity=true``).

Krishna, Gupta, Verma, Dhamala, Pruksachatkun and Chang (ACL 2022, "Measuring fairness
of text classifiers via prediction sensitivity") measure how much a prediction depends on
a protected attribute through the Jacobian of the model's output probabilities with
respect to its input features::

    PS(x) = v^T |J(x)| w,      J[k, i] = d p_k(x) / d x_i

``|J|`` is element-wise, ``v`` weights the outputs and ``w`` the input features by their
relevance to the protected attribute; the accumulated prediction sensitivity is the mean
of ``PS`` over a dataset. Here the input features are the word embeddings the model reads
(token x dimension), ``v`` is uniform over the classes (``1/K``), and ``w`` marks the
protected attribute lexically: the embedding coordinates of the gendered terms of
:mod:`fednlp_bench.audit.counterfactual` (every coordinate of such a token gets the same
weight, normalised to sum 1 over the example), i.e. the relevance vector of an attribute
detector that reads only those words. An example without a listed term has ``w = 0`` and
``PS = 0``. The unit is probability per unit of embedding coordinate.
"""
from __future__ import annotations

from typing import Any, Callable

import numpy as np
import torch

from fednlp_bench.audit.counterfactual import GENDER_PAIRS

LogitsFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def prediction_sensitivity(logits_fn: LogitsFn, inputs_embeds: torch.Tensor, attention_mask: torch.Tensor,
                           weights: torch.Tensor, v: torch.Tensor | None = None) -> torch.Tensor:
    """``v^T |J| w`` per example of a batch.

    ``logits_fn(inputs_embeds, attention_mask) -> (B, K)``; ``weights`` (B, T, H) is ``w`` laid out
    like the inputs; ``v`` (K,) defaults to ``1/K``. One backward pass per class; examples of a
    batch must not interact (eval mode).
    """
    x = inputs_embeds.detach().requires_grad_()
    with torch.enable_grad():
        p = torch.softmax(logits_fn(x, attention_mask).float(), -1)
        k = p.shape[1]
        v = torch.full((k,), 1.0 / k, device=p.device) if v is None else v.to(p.device)
        out = torch.zeros(len(x), device=p.device, dtype=torch.float64)
        for c in range(k):
            (jac,) = torch.autograd.grad(p[:, c].sum(), [x], retain_graph=c < k - 1)
            out += v[c].double() * (jac.abs().double() * weights.double()).flatten(1).sum(1)
    return out


def term_positions(tokenizer: Any, input_ids: torch.Tensor) -> torch.Tensor:
    """(B, T) bool: the tokens that belong to a gendered term (single tokens and whole multi-piece terms)."""
    words = sorted({w for pair in GENDER_PAIRS for w in pair} | {"hers"})
    hit = torch.zeros_like(input_ids, dtype=torch.bool)
    for w in words:
        for form in {w, w.capitalize()}:
            ids = tokenizer(form, add_special_tokens=False)["input_ids"]
            n = len(ids)
            if n == 0 or n > input_ids.shape[1]:
                continue
            pattern = torch.tensor(ids, device=input_ids.device)
            windows = input_ids.unfold(1, n, 1)  # (B, T - n + 1, n)
            starts = (windows == pattern).all(-1)
            for j in range(n):
                hit[:, j : j + starts.shape[1]] |= starts
    return hit


def feature_weights(positions: torch.Tensor, hidden: int) -> torch.Tensor:
    """``w`` (B, T, H): equal weight on every coordinate of the marked tokens, summing to 1 per example."""
    w = positions.double()[..., None].expand(-1, -1, hidden)
    total = w.flatten(1).sum(1).clamp(min=1.0)
    return w / total[:, None, None]


def sensitivity_audit(model: torch.nn.Module, task: Any, tokenizer: Any, texts: list[str], max_len: int,
                      batch_size: int, pad_id: int, device: torch.device) -> dict[str, Any]:
    """Mean prediction sensitivity over ``texts`` (all of them, and those with a gendered term)."""
    data = task.encode_texts(texts, np.zeros(len(texts), dtype=np.int64), tokenizer, max_len)
    table = task.input_embeddings(model)
    scores = np.zeros(len(texts))
    affected = np.zeros(len(texts), dtype=bool)
    was_training = model.training
    model.eval()
    try:
        for start in range(0, len(texts), batch_size):
            rows = np.arange(start, min(start + batch_size, len(texts)))
            batch = {k: v.to(device) for k, v in task.collate(data, rows, pad_id).items()}
            pos = term_positions(tokenizer, batch["input_ids"]) & batch["attention_mask"].bool()
            w = feature_weights(pos, table.embedding_dim)
            emb = table(batch["input_ids"]).detach()
            ps = prediction_sensitivity(lambda x, m: task.embedding_logits(model, x, m), emb,
                                        batch["attention_mask"], w)
            scores[rows] = ps.cpu().numpy()
            affected[rows] = pos.any(1).cpu().numpy()
    finally:
        model.train(was_training)
    return {"metric": "prediction sensitivity (Krishna et al. 2022), v uniform, w on gendered-term embeddings",
            "accumulated": float(scores.mean()) if len(texts) else None,
            "mean_affected": float(scores[affected].mean()) if affected.any() else None,
            "n_affected": int(affected.sum()), "n_test": len(texts)}
