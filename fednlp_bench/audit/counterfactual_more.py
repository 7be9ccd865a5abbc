"""The gender-swap counterfactual probe for language models and sequence taggers.

Both reuse the swap of :mod:`fednlp_bench.audit.counterfactual` (same word pairs, whole
words, case kept) on the test texts that contain a listed term.

* Language model (``sequence_logprob``): the log-likelihood gap between a sentence and its
  swapped twin, in the manner of CrowS-Pairs (Nangia et al. 2020) and of the role-reversal
  probes of Gupta et al. 2022 ("Mitigating gender bias in distilled language models via
  counterfactual role reversal"). ``mean_abs_ll_gap`` is the mean ``|log P(swapped) - log
  P(original)|`` in nats (0 = indifferent to the swap); over the pairs whose original has
  terms of one gender only, ``male_preference_rate`` is the share where the male version is
  more likely (0.5 = no preference) and ``mean_ll_gap_male_minus_female`` the mean signed gap.
* Sequence tagger (``word_tags``): the tags predicted for each word before and after the
  swap; ``flip_rate`` is the share of affected sentences with any word's tag changed and
  ``word_flip_rate`` the share of words whose tag changed (words compared up to the shorter
  of the two truncations).
"""
from __future__ import annotations

from typing import Any, Callable, Sequence

import numpy as np

from fednlp_bench.audit.counterfactual import GENDER_PAIRS, swapped_pairs

_MALE = frozenset(m for m, _ in GENDER_PAIRS)
_FEMALE = frozenset(f for _, f in GENDER_PAIRS) | {"hers"}


def gender_of_terms(text: str) -> int:
    """+1 if the listed terms in ``text`` are all male, -1 if all female, 0 if mixed or none."""
    words = {w.lower().strip(".,;:!?\"'()") for w in text.split()}
    male, female = bool(words & _MALE), bool(words & _FEMALE)
    return 1 if male and not female else -1 if female and not male else 0


def loglik_probe(texts: Sequence[str], loglik: Callable[[list[str]], np.ndarray],
                 keep: Callable[[str, str], bool] | None = None) -> dict[str, Any]:
    """Log-likelihood gap between each affected text and its swapped twin (see module doc)."""
    originals, swapped, n_terms = swapped_pairs(texts, keep)
    out: dict[str, Any] = {"probe": "gender term swap, log-likelihood gap", "n_test": len(texts),
                           "n_with_terms": n_terms, "n_affected": len(originals), "mean_abs_ll_gap": None,
                           "male_preference_rate": None, "mean_ll_gap_male_minus_female": None, "n_directional": 0}
    if not originals:
        return out
    gap = np.asarray(loglik(swapped), dtype=np.float64) - np.asarray(loglik(originals), dtype=np.float64)
    direction = np.array([gender_of_terms(t) for t in originals])
    male_minus_female = (-gap * direction)[direction != 0]  # original male: LL(orig) - LL(swapped)
    out.update(mean_abs_ll_gap=float(np.abs(gap).mean()), n_directional=int(len(male_minus_female)))
    if len(male_minus_female):
        out.update(male_preference_rate=float((male_minus_female > 0).mean()),
                   mean_ll_gap_male_minus_female=float(male_minus_female.mean()))
    return out


def tag_probe(texts: Sequence[str], tags: Callable[[list[str]], list[np.ndarray]],
              keep: Callable[[str, str], bool] | None = None) -> dict[str, Any]:
    """Word-tag changes between each affected sentence and its swapped twin (see module doc)."""
    originals, swapped, n_terms = swapped_pairs(texts, keep)
    out: dict[str, Any] = {"probe": "gender term swap, tag changes", "n_test": len(texts), "n_with_terms": n_terms,
                           "n_affected": len(originals), "flip_rate": None, "word_flip_rate": None}
    if not originals:
        return out
    changed_sentences, changed_words, compared = 0, 0, 0
    for a, b in zip(tags(originals), tags(swapped)):
        n = min(len(a), len(b))
        diff = int((np.asarray(a[:n]) != np.asarray(b[:n])).sum())
        changed_sentences += diff > 0
        changed_words += diff
        compared += n
    out.update(flip_rate=changed_sentences / len(originals), word_flip_rate=changed_words / max(compared, 1))
    return out
