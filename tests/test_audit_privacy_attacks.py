"""Membership inference and canary exposure on a tiny memorising text classifier, with and without DP-SGD."""
from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
import torch
from torch import nn

from fednlp_bench.audit import canaries, membership_inference as mia
from fednlp_bench.local import flatten_model
from fednlp_bench.privacy.dp_sgd import DPSGD, SampleDPParams, noise_generator

LETTERS = "abcdefghijklmnopqrstuvwxyz"  # letter i is token 10 + i; random data uses tokens >= 40
PREFIX = [1, 2, 3, 4]


class BagOfWords(nn.Module):
    def __init__(self, vocab: int = 400, dim: int = 16, n_labels: int = 4) -> None:
        super().__init__()
        self.emb = nn.Embedding(vocab, dim, padding_idx=0)
        self.out = nn.Linear(dim, n_labels)

    def forward(self, input_ids, attention_mask):
        m = attention_mask.unsqueeze(-1).float()
        return SimpleNamespace(logits=self.out((self.emb(input_ids) * m).sum(1) / m.sum(1)))


def random_data(rng: np.random.Generator, n: int, length: int = 10) -> tuple[torch.Tensor, torch.Tensor]:
    return torch.as_tensor(rng.integers(40, 400, (n, length))), torch.as_tensor(rng.integers(0, 4, n))


def canary_ids(secret: str) -> torch.Tensor:
    return torch.tensor([PREFIX + [10 + LETTERS.index(c) for c in secret]])


def train(ids: torch.Tensor, labels: torch.Tensor, seed: int, dp: SampleDPParams | None = None,
          epochs: int = 30) -> BagOfWords:
    torch.manual_seed(seed)
    model = BagOfWords()
    _, grads = flatten_model(model)
    opt = torch.optim.Adam(model.parameters(), lr=0.05)
    dpsgd = DPSGD(model, dp) if dp is not None else None
    gen = noise_generator(seed, 0, 0, grads.device)
    rng = np.random.default_rng(seed)
    for _ in range(epochs):
        for rows in np.array_split(rng.permutation(len(ids)), max(1, len(ids) // 32)):
            batch = {"input_ids": ids[rows], "attention_mask": torch.ones_like(ids[rows]), "labels": labels[rows]}
            if dpsgd is None:
                grads.zero_()
                nn.functional.cross_entropy(model(batch["input_ids"], batch["attention_mask"]).logits,
                                            batch["labels"]).backward()
            else:
                dpsgd.gradient(batch, grads, gen)
            opt.step()
    return model.eval()


@torch.no_grad()
def logits_of(model: BagOfWords, ids: torch.Tensor) -> np.ndarray:
    return model(ids, torch.ones_like(ids)).logits.numpy()


def test_roc_metrics_edge_cases():
    perfect = mia.roc_metrics([2, 3, 4], [0, 1])
    assert perfect["auc"] == 1.0 and perfect["tpr_at_0.01_fpr"] == 1.0
    chance = mia.roc_metrics([1, 1], [1, 1])
    assert chance["auc"] == 0.5 and chance["tpr_at_0.001_fpr"] == 0.0
    assert mia.roc_metrics([], [1.0])["auc"] is None
    z = np.array([[2.0, 0.0, -1.0]])
    p = np.exp(z) / np.exp(z).sum()
    assert mia.logit_confidence(z, np.array([0]))[0] == pytest.approx(np.log(p[0, 0] / (1 - p[0, 0])))
    assert mia.cross_entropy(z, np.array([0]))[0] == pytest.approx(-np.log(p[0, 0]))


def test_membership_inference_finds_a_memorising_model():
    rng = np.random.default_rng(0)
    mem_ids, mem_y = random_data(rng, 64)
    non_ids, non_y = random_data(rng, 64)
    ref_ids, ref_y = random_data(rng, 64)
    target = train(mem_ids, mem_y, seed=0)
    mem_logits, non_logits = logits_of(target, mem_ids), logits_of(target, non_ids)
    loss = mia.audit(mia.loss_scores(mia.cross_entropy(mem_logits, mem_y.numpy())),
                     mia.loss_scores(mia.cross_entropy(non_logits, non_y.numpy())),
                     member_groups=np.array_split(np.arange(64), 8), nonmember_groups=np.array_split(np.arange(64), 8))
    assert loss["example"]["auc"] > 0.9 and loss["client"]["auc"] > 0.9
    # offline LiRA: reference models never saw the audited examples
    refs = [train(ref_ids[i::2], ref_y[i::2], seed=10 + i) for i in range(2)]
    all_ids = torch.cat([mem_ids, non_ids])
    all_y = torch.cat([mem_y, non_y]).numpy()
    ref_phi = np.stack([mia.logit_confidence(logits_of(r, all_ids), all_y) for r in refs])
    scores = mia.lira_offline_scores(mia.logit_confidence(logits_of(target, all_ids), all_y), ref_phi)
    lira = mia.roc_metrics(scores[:64], scores[64:])
    assert lira["auc"] > 0.9 and lira["n_nonmembers"] == 64
    # an untrained model leaks nothing
    fresh = BagOfWords().eval()
    chance = mia.roc_metrics(-mia.cross_entropy(logits_of(fresh, mem_ids), mem_y.numpy()),
                             -mia.cross_entropy(logits_of(fresh, non_ids), non_y.numpy()))
    assert 0.3 < chance["auc"] < 0.7


def test_canary_exposure_drops_with_dp_sgd():
    rng = np.random.default_rng(1)
    canary = canaries.make_canary(rng, length=6, alphabet=LETTERS, label=0)
    assert canary.text().startswith("my secret pin code is ") and len(canary.secret) == 6
    cands = canaries.candidate_secrets(rng, canary, 255, alphabet=LETTERS)
    assert canary.secret not in cands and len(set(cands)) == 255
    ids, y = random_data(rng, 120)
    can = canary_ids(canary.secret)
    ids = torch.cat([ids[:, : can.shape[1]], can.repeat(8, 1)])
    y = torch.cat([y, torch.zeros(8, dtype=torch.long)])
    probe = torch.cat([canary_ids(s) for s in [canary.secret, *cands]])
    probe_y = np.zeros(len(probe), dtype=np.int64)

    def exposure_of(model: BagOfWords) -> float:
        losses = mia.cross_entropy(logits_of(model, probe), probe_y)
        return canaries.exposure(losses[0], losses[1:])["exposure"]

    plain = exposure_of(train(ids, y, seed=3, epochs=10))
    private = exposure_of(train(ids, y, seed=3, epochs=10, dp=SampleDPParams(clip=0.1, noise_multiplier=4.0)))
    assert plain >= 7.5  # the maximum is log2(256) = 8 bits
    assert private < plain - 3.0
    assert canaries.exposure(0.5, np.array([1.0, 2.0, 3.0]))["exposure"] == pytest.approx(2.0)
