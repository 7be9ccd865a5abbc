"""Canary exposure (Carlini, Liu, Erlingsson, Kos & Song 2019, "The Secret Sharer").

A canary is a synthetic sentence carrying a random secret, e.g. "my pin code
is 4 1 9 7 3 8", inserted a few times into one client's training data. After
training, the true secret is ranked among candidate secrets by the model's
loss on the canary (for a classifier: the loss of the canary sentence with
the canary's label; for a language model: its log-perplexity). The exposure
is ``log2 |R| - log2 rank``; with a uniform sample of candidates instead of
the whole space ``R`` it is estimated as ``-log2 Pr[loss(r) <= loss(secret)]``
(Carlini et al. 2019, section 4.2), capped at ``log2(n_candidates + 1)``.
A model that did not memorise gives exposure around 1 (rank in the middle).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

DIGITS = "0123456789"


@dataclass(frozen=True)
class Canary:
    """One canary: ``template.format(secret=...)`` with a secret of ``length`` symbols."""

    secret: str
    template: str = "my secret pin code is {secret}"
    label: int = 0

    def text(self, secret: str | None = None) -> str:
        return self.template.format(secret=self.spaced(secret))

    def spaced(self, secret: str | None = None) -> str:
        """The secret (or another one) as written in the text: one symbol per word."""
        return " ".join(secret if secret is not None else self.secret)

    @property
    def prefix(self) -> str:
        """The non-sensitive words before the secret (the template must end with ``{secret}``)."""
        head, sep, tail = self.template.partition("{secret}")
        if not sep or tail.strip():
            raise ValueError(f"canary template must end with '{{secret}}', got {self.template!r}")
        return head.strip()


def make_canary(rng: np.random.Generator, length: int = 6, alphabet: str = DIGITS,
                template: str = "my secret pin code is {secret}", label: int = 0) -> Canary:
    """A canary with a uniformly random secret."""
    return Canary("".join(rng.choice(list(alphabet), size=length)), template, label)


def candidate_secrets(rng: np.random.Generator, canary: Canary, n: int, alphabet: str = DIGITS) -> list[str]:
    """``n`` distinct random secrets of the canary's length, excluding the true one."""
    space = len(alphabet) ** len(canary.secret)
    if n >= space:
        raise ValueError(f"asked for {n} candidates from a space of {space}")
    seen = {canary.secret}
    out: list[str] = []
    letters = list(alphabet)
    while len(out) < n:
        s = "".join(rng.choice(letters, size=len(canary.secret)))
        if s not in seen:
            seen.add(s)
            out.append(s)
    return out


def exposure(secret_loss: float, candidate_losses: np.ndarray, space_size: int | None = None) -> dict[str, float]:
    """Rank of the true secret (1 = lowest loss) and its estimated exposure in bits."""
    cand = np.asarray(candidate_losses, dtype=np.float64)
    rank = 1 + int((cand < secret_loss).sum()) + 0.5 * int((cand == secret_loss).sum())
    n = len(cand)
    out = {"rank": float(rank), "n_candidates": n, "exposure": math.log2((n + 1) / rank),
           "max_exposure": math.log2(n + 1)}
    if space_size is not None:
        out["space_size"] = space_size
    return out
