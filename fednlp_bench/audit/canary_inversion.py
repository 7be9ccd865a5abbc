"""Canary extraction by model inversion (Parikh, Dupuy and Gupta, ACL 2022).

Canaries are synthetic training sentences ``"the secret code of the <key> safe is d d d d"``
(a 4-digit secret, the paper's four-digit code) inserted ``copies`` times each into one
client's data. After training, a white-box attacker who knows a canary's non-sensitive
prefix (and, for a classifier, its label) tries to *reconstruct* the secret, instead of
ranking it among candidates as exposure does (:mod:`fednlp_bench.audit.canaries`):

* a language model (task capability ``next_token_logits``) is asked to complete the
  prefix: greedy decoding and beam search (width 5) over the secret alphabet, plus
  unconstrained greedy decoding over the whole output vocabulary;
* a classifier (``embedding_logits``) is inverted as in the paper: each secret position
  gets a relaxed one-hot vector over the alphabet (a softmax of free logits, temperature
  annealed from 1 to 0.05), the embedding fed to the model is the vector times the
  alphabet's word embeddings, and Adam minimises the cross-entropy of the canary's
  label; each position is then projected to its most likely token, and of several
  random restarts the guess with the lowest label loss is kept.

Reported per method: the reconstruction rate (share of canaries whose whole secret is
recovered) and the per-digit accuracy, with the chance levels ``|A|^-L`` and ``1/|A|``.
Canaries that share a prefix get distinct labels, so (prefix, label) identifies exactly
one canary; for a language model (one label) every prefix is unique.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from fednlp_bench.audit.canaries import DIGITS, Canary

TEMPLATE = "the secret code of the {key} safe is {secret}"
KEYS = ("red", "blue", "green", "yellow", "black", "white", "orange", "purple", "brown", "grey", "silver",
        "golden", "pink", "violet", "copper", "bronze", "iron", "steel", "wooden", "glass", "marble", "stone",
        "crystal", "plastic")
SECRET_LENGTH = 4
BEAM_WIDTH = 5


@dataclass(frozen=True)
class InversionConfig:
    """Optimisation of the relaxed one-hot attack (classifiers)."""

    steps: int = 60
    restarts: int = 3
    sweeps: int = 2  # coordinate-descent sweeps over the projected guesses (0: projection only)
    lr: float = 0.1
    tau_start: float = 1.0
    tau_end: float = 0.05


def make_canaries(rng: np.random.Generator, n: int, n_labels: int, length: int = SECRET_LENGTH) -> list[Canary]:
    """``n`` canaries with random secrets; a prefix is shared by at most ``n_labels`` canaries, all with
    distinct labels (``n_labels = 1``: every prefix unique)."""
    n_labels = max(1, int(n_labels))
    n_keys = -(-n // n_labels)
    if n_keys > len(KEYS):
        raise ValueError(f"at most {len(KEYS) * n_labels} canaries with {n_labels} labels, asked for {n}")
    keys = rng.permutation(len(KEYS))[:n_keys]
    out = []
    for k, key in enumerate(keys):
        labels = rng.permutation(n_labels)[: min(n_labels, n - k * n_labels)]
        for label in labels.tolist():
            secret = "".join(rng.choice(list(DIGITS), size=length))
            out.append(Canary(secret, TEMPLATE.replace("{key}", KEYS[key]), int(label)))
    return out


def score_guesses(canaries: list[Canary], guesses: list[str]) -> dict[str, float]:
    """Reconstruction rate (exact secrets) and per-digit accuracy of ``guesses``."""
    exact = [g == c.secret for c, g in zip(canaries, guesses)]
    digits = [sum(a == b for a, b in zip(c.secret, g)) / len(c.secret) for c, g in zip(canaries, guesses)]
    return {"reconstruction_rate": float(np.mean(exact)), "per_digit_accuracy": float(np.mean(digits)),
            "n_reconstructed": int(sum(exact))}


def alphabet_ids(tokenizer: Any, alphabet: str = DIGITS) -> list[int]:
    """Token id of each alphabet symbol (each must be a single token)."""
    ids = []
    for ch in alphabet:
        tok = tokenizer(ch, add_special_tokens=False)["input_ids"]
        if len(tok) != 1:
            raise ValueError(f"secret symbol {ch!r} is not a single token for this tokenizer")
        ids.append(int(tok[0]))
    return ids


# --------------------------------------------------------------------------- language models
def _prefix_ids(tokenizer: Any, prefix: str) -> list[int]:
    """``[CLS] prefix`` without the closing [SEP]: the context the model continues."""
    ids = tokenizer(prefix)["input_ids"]
    return ids[:-1] if ids and ids[-1] == tokenizer.sep_token_id else ids


@torch.no_grad()
def beam_decode(task: Any, model: torch.nn.Module, prefix: list[int], allowed: list[int] | None, steps: int,
                width: int, device: torch.device) -> list[int]:
    """The ``steps`` tokens after ``prefix`` with the highest total log-probability found by beam search
    of ``width`` (1 = greedy), choosing among ``allowed`` token ids (``None``: any)."""
    beams = [(list(prefix), 0.0)]
    for _ in range(steps):
        ids = torch.tensor([b[0] for b in beams], device=device)
        logp = task.next_token_logits(model, ids, torch.ones_like(ids)).float()
        if allowed is not None:
            keep = torch.full_like(logp, float("-inf"))
            keep[:, allowed] = 0.0
            logp = logp + keep
        cand = (logp + torch.tensor([b[1] for b in beams], device=device)[:, None]).flatten()
        top = torch.topk(cand, min(width, int(torch.isfinite(cand).sum()))).indices.tolist()
        vocab = logp.shape[1]
        beams = [(beams[i // vocab][0] + [i % vocab], float(cand[i])) for i in top]
    return beams[0][0][len(prefix):]


def invert_lm(task: Any, model: torch.nn.Module, tokenizer: Any, canaries: list[Canary],
              device: torch.device) -> dict[str, list[str]]:
    """Guesses per method: ``greedy`` and ``beam`` over the digits, ``greedy_free`` over every token."""
    digits = alphabet_ids(tokenizer)
    symbol = {t: ch for t, ch in zip(digits, DIGITS)}
    guesses: dict[str, list[str]] = {"greedy": [], "beam": [], "greedy_free": []}
    was_training = model.training
    model.eval()
    try:
        for c in canaries:
            prefix = _prefix_ids(tokenizer, c.prefix)
            for name, allowed, width in (("greedy", digits, 1), ("beam", digits, BEAM_WIDTH), ("greedy_free", None, 1)):
                out = beam_decode(task, model, prefix, allowed, len(c.secret), width, device)
                guesses[name].append("".join(symbol.get(t, "?") for t in out))
    finally:
        model.train(was_training)
    return guesses


# --------------------------------------------------------------------------- classifiers
def _slot_layout(tokenizer: Any, canaries: list[Canary], restarts: int) -> tuple[torch.Tensor, torch.Tensor,
                                                                                  torch.Tensor]:
    """Token ids ``[CLS] prefix <slots> [SEP]`` (slots hold [MASK], overwritten by the attack), the
    attention mask and the (B, L) positions of the slots, each canary repeated ``restarts`` times."""
    rows, slots = [], []
    for c in canaries:
        pre = _prefix_ids(tokenizer, c.prefix)
        rows += [pre + [tokenizer.mask_token_id] * len(c.secret) + [tokenizer.sep_token_id]] * restarts
        slots += [list(range(len(pre), len(pre) + len(c.secret)))] * restarts
    width = max(len(r) for r in rows)
    pad = tokenizer.pad_token_id or 0
    ids = torch.tensor([r + [pad] * (width - len(r)) for r in rows])
    mask = torch.tensor([[1] * len(r) + [0] * (width - len(r)) for r in rows])
    return ids, mask, torch.tensor(slots)


class _Relaxed:
    """The attacked batch: fixed prefix embeddings, label, and slots filled with symbol weights."""

    def __init__(self, task: Any, model: torch.nn.Module, tokenizer: Any, canaries: list[Canary], restarts: int,
                 device: torch.device) -> None:
        self.task, self.model = task, model
        self.table = task.input_embeddings(model).weight.detach()
        self.symbols = self.table[torch.tensor(alphabet_ids(tokenizer), device=device)]
        ids, self.mask, self.slots = (t.to(device) for t in _slot_layout(tokenizer, canaries, restarts))
        self.fixed = self.table[ids]
        self.labels = torch.tensor([c.label for c in canaries for _ in range(restarts)], device=device)

    def loss(self, weights: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
        """(N,) label cross-entropy with slot symbol weights ``weights`` (N, L, A) on base rows ``rows``."""
        n, length = weights.shape[:2]
        slots = (weights @ self.symbols).reshape(n * length, -1)
        at = (torch.arange(n, device=rows.device).repeat_interleave(length), self.slots[rows].flatten())
        x = self.fixed[rows].index_put(at, slots)
        logits = self.task.embedding_logits(self.model, x, self.mask[rows]).float()
        return torch.nn.functional.cross_entropy(logits, self.labels[rows], reduction="none")

    def discrete_loss(self, choice: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
        return self.loss(torch.nn.functional.one_hot(choice, len(self.symbols)).to(self.table.dtype), rows)


def invert_classifier(task: Any, model: torch.nn.Module, tokenizer: Any, canaries: list[Canary],
                      device: torch.device, seed: int, opt: InversionConfig = InversionConfig()) -> list[str]:
    """The relaxed one-hot attack with coordinate-descent refinement (module doc): one guess per canary."""
    length = len(canaries[0].secret)
    if any(len(c.secret) != length for c in canaries):
        raise ValueError("all canaries must have secrets of the same length")
    was_training = model.training
    model.eval()
    try:
        batch = _Relaxed(task, model, tokenizer, canaries, opt.restarts, device)
        rows = torch.arange(len(batch.labels), device=device)
        gen = torch.Generator().manual_seed(seed)
        z = torch.randn(len(rows), length, len(batch.symbols), generator=gen).to(device).requires_grad_()
        adam = torch.optim.Adam([z], lr=opt.lr)
        with torch.enable_grad():
            for step in range(opt.steps):
                tau = opt.tau_start * (opt.tau_end / opt.tau_start) ** (step / max(opt.steps - 1, 1))
                (z.grad,) = torch.autograd.grad(batch.loss(torch.softmax(z / tau, -1), rows).sum(), [z])
                adam.step()
        with torch.no_grad():
            choice, final = refine(batch.discrete_loss, z.detach().argmax(-1), len(batch.symbols), opt.sweeps)
    finally:
        model.train(was_training)
    best = final.view(len(canaries), opt.restarts).argmin(1)
    picks = choice.view(len(canaries), opt.restarts, length)[torch.arange(len(canaries), device=best.device), best]
    return ["".join(DIGITS[int(i)] for i in row) for row in picks.tolist()]


def refine(loss_of: Any, choice: torch.Tensor, n_symbols: int, sweeps: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Coordinate descent on projected guesses ``choice`` (B, L): position by position, the symbol with the
    lowest loss (all ``n_symbols`` tried in one batch), until a sweep changes nothing or ``sweeps`` ran.
    ``loss_of(choice, rows)`` scores guesses for base rows ``rows``. Returns (guesses, their losses)."""
    rows = torch.arange(len(choice), device=choice.device)
    choice = choice.clone()
    current = loss_of(choice, rows)
    for _ in range(sweeps):
        changed = False
        for pos in range(choice.shape[1]):
            trial = choice.repeat_interleave(n_symbols, 0)
            trial[:, pos] = torch.arange(n_symbols, device=choice.device).repeat(len(choice))
            losses = loss_of(trial, rows.repeat_interleave(n_symbols)).view(len(choice), n_symbols)
            low, arg = losses.min(1)
            better = low < current - 1e-7
            if better.any():
                changed = True
                choice[better, pos] = arg[better]
                current = torch.where(better, low, current)
        if not changed:
            break
    return choice, current
