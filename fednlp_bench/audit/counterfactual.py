"""Counterfactual fairness probe for text classification: swap gendered terms.

Every test text that contains at least one term of :data:`GENDER_PAIRS` is
rewritten with each such term replaced by its counterpart (``he`` <-> ``she``,
``his`` -> ``her``, ``Mr`` <-> ``Mrs``, ...), keeping the capitalisation of the
original word. The final model then classifies both versions, and the probe
reports (Garg et al. 2019, "Counterfactual Fairness in Text Classification
through Robustness"; Prabhakaran et al. 2019, "Perturbation Sensitivity
Analysis"):

* ``flip_rate``: the share of affected texts whose predicted class changes;
* ``mean_abs_delta_prob``: the mean absolute change of the probability of the
  class predicted for the original text;
* ``n_affected`` / ``n_test``: how many test texts contained a term.

The word list is deliberately simple and documented here (binary terms only,
no names). ``his`` maps to ``her`` (determiner use, the common one) and ``her``
is ambiguous (him/his); it maps to ``his``, which is right for possessives and
slightly ungrammatical otherwise; the probe measures the model's sensitivity
to the swap, not the fluency of the result.
"""
from __future__ import annotations

import re
from typing import Any, Callable, Sequence

import numpy as np

#: (male, female) pairs; matching is whole-word and case-insensitive.
GENDER_PAIRS: tuple[tuple[str, str], ...] = (
    ("he", "she"), ("him", "her"), ("his", "her"), ("himself", "herself"),
    ("man", "woman"), ("men", "women"), ("boy", "girl"), ("boys", "girls"),
    ("male", "female"), ("males", "females"), ("gentleman", "lady"), ("gentlemen", "ladies"),
    ("father", "mother"), ("fathers", "mothers"), ("dad", "mum"), ("son", "daughter"),
    ("sons", "daughters"), ("brother", "sister"), ("brothers", "sisters"), ("husband", "wife"),
    ("husbands", "wives"), ("boyfriend", "girlfriend"), ("uncle", "aunt"), ("nephew", "niece"),
    ("grandfather", "grandmother"), ("grandson", "granddaughter"), ("king", "queen"),
    ("prince", "princess"), ("mr", "mrs"), ("sir", "dame"), ("actor", "actress"),
    ("actors", "actresses"), ("chairman", "chairwoman"), ("spokesman", "spokeswoman"),
    ("businessman", "businesswoman"), ("sportsman", "sportswoman"),
)


def swap_table(pairs: Sequence[tuple[str, str]] = GENDER_PAIRS) -> dict[str, str]:
    """Lower-case word -> replacement, both directions; ``her`` maps to ``his``, ``hers`` to ``his``."""
    table: dict[str, str] = {}
    for male, female in pairs:
        table.setdefault(male.lower(), female.lower())
        table.setdefault(female.lower(), male.lower())
    table["her"] = "his"
    table["hers"] = "his"
    return table


def _match_case(word: str, replacement: str) -> str:
    if word.isupper() and len(word) > 1:
        return replacement.upper()
    if word[:1].isupper():
        return replacement[:1].upper() + replacement[1:]
    return replacement


def swap_gender(text: str, table: dict[str, str] | None = None) -> tuple[str, int]:
    """``text`` with every listed term replaced; returns (new text, number of replacements)."""
    table = table or _DEFAULT_TABLE
    pattern = _pattern(tuple(sorted(table)))
    count = 0

    def repl(m: re.Match) -> str:
        nonlocal count
        count += 1
        word = m.group(0)
        return _match_case(word, table[word.lower()])

    return pattern.sub(repl, text), count


_PATTERNS: dict[tuple[str, ...], re.Pattern] = {}


def _pattern(words: tuple[str, ...]) -> re.Pattern:
    if words not in _PATTERNS:
        alternatives = "|".join(re.escape(w) for w in sorted(words, key=len, reverse=True))
        _PATTERNS[words] = re.compile(rf"\b(?:{alternatives})\b", re.IGNORECASE)
    return _PATTERNS[words]


_DEFAULT_TABLE = swap_table()


def swapped_pairs(texts: Sequence[str], keep: Callable[[str, str], bool] | None = None,
                  table: dict[str, str] | None = None) -> tuple[list[str], list[str], int]:
    """``(originals, swapped, n_with_terms)`` over texts that contain a listed term (and pass ``keep``)."""
    originals, swapped, n_terms = [], [], 0
    for text in texts:
        new, n = swap_gender(text, table)
        if not n:
            continue
        n_terms += 1
        if keep is None or keep(text, new):
            originals.append(text)
            swapped.append(new)
    return originals, swapped, n_terms


def counterfactual_probe(texts: Sequence[str], probabilities: Callable[[list[str]], np.ndarray],
                         table: dict[str, str] | None = None,
                         keep: Callable[[str, str], bool] | None = None) -> dict[str, Any]:
    """Flip rate and mean |delta p| of the predicted class over texts that contain a listed term.

    ``probabilities(texts)`` returns the model's class probabilities, shape (n, classes);
    ``keep(original, swapped)``, if given, drops pairs the model cannot tell apart (e.g. the swap
    falls beyond the truncation length): ``n_with_terms`` counts all, ``n_affected`` the kept ones.
    """
    originals, swapped, n_terms = swapped_pairs(texts, keep, table)
    out: dict[str, Any] = {"probe": "gender term swap", "n_test": len(texts), "n_with_terms": n_terms,
                           "n_affected": len(originals), "flip_rate": None, "mean_abs_delta_prob": None,
                           "max_abs_delta_prob": None, "word_pairs": len(GENDER_PAIRS)}
    if not originals:
        return out
    p_orig = np.asarray(probabilities(originals), dtype=np.float64)
    p_swap = np.asarray(probabilities(swapped), dtype=np.float64)
    pred = p_orig.argmax(1)
    rows = np.arange(len(pred))
    delta = np.abs(p_orig[rows, pred] - p_swap[rows, pred])
    out.update(flip_rate=float((p_swap.argmax(1) != pred).mean()), mean_abs_delta_prob=float(delta.mean()),
               max_abs_delta_prob=float(delta.max()))
    return out
