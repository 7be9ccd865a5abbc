"""SQuAD exact match and token F1 (Rajpurkar et al. 2016, the official v1.1 evaluation script).

Answers are normalised before comparison: lower case, punctuation removed, the
articles a/an/the removed, whitespace collapsed. A prediction is scored
against each gold answer and the best score counts.
"""
from __future__ import annotations

import re
import string
from collections import Counter

_ARTICLES = re.compile(r"\b(a|an|the)\b")
_PUNCT = str.maketrans("", "", string.punctuation)


def normalize_answer(text: str) -> str:
    """Lower text and remove punctuation, articles and extra whitespace (SQuAD v1.1)."""
    return " ".join(_ARTICLES.sub(" ", text.lower().translate(_PUNCT)).split())


def exact_match(prediction: str, gold: str) -> float:
    return float(normalize_answer(prediction) == normalize_answer(gold))


def token_f1(prediction: str, gold: str) -> float:
    """Harmonic mean of token precision and recall after normalisation (bag of tokens)."""
    pred_toks = normalize_answer(prediction).split()
    gold_toks = normalize_answer(gold).split()
    if not pred_toks or not gold_toks:  # SQuAD v2 convention for empty answers
        return float(pred_toks == gold_toks)
    common = Counter(pred_toks) & Counter(gold_toks)
    same = sum(common.values())
    if same == 0:
        return 0.0
    precision, recall = same / len(pred_toks), same / len(gold_toks)
    return 2 * precision * recall / (precision + recall)


def best_over_golds(prediction: str, golds: list[str]) -> tuple[float, float]:
    """``(exact_match, f1)`` of ``prediction`` against its best-matching gold answer."""
    if not golds:
        return 0.0, 0.0
    return max(exact_match(prediction, g) for g in golds), max(token_f1(prediction, g) for g in golds)


def squad_scores(predictions: list[str], golds: list[list[str]]) -> dict[str, float]:
    """Mean exact match and F1 over examples, as fractions in [0, 1] (the script reports x100)."""
    if not predictions:
        return {"f1": float("nan"), "exact_match": float("nan")}
    pairs = [best_over_golds(p, g) for p, g in zip(predictions, golds)]
    return {
        "f1": sum(f for _, f in pairs) / len(pairs),
        "exact_match": sum(e for e, _ in pairs) / len(pairs),
    }
