"""Canary extraction by model inversion: recovers secrets a model memorised, not from an untrained model."""
from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
import torch

from fednlp_bench import config, tasks
from fednlp_bench.audit.canary_inversion import (InversionConfig, invert_classifier, invert_lm, make_canaries,
                                                 score_guesses)
from fednlp_bench.config import ConfigError
from fednlp_bench.models import load_tokenizer
from fednlp_bench.tasks import causal_lm

TOK = load_tokenizer("minilm-l6")
CPU = torch.device("cpu")


@pytest.fixture(autouse=True)
def one_thread():
    """Small models on a shared machine: one thread avoids waiting on descheduled ones."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def tiny_bert(cls, seed: int, **extra):
    from transformers import BertConfig

    torch.manual_seed(seed)
    cfg = BertConfig(vocab_size=TOK.vocab_size, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                     intermediate_size=64, max_position_embeddings=32, hidden_dropout_prob=0.0,
                     attention_probs_dropout_prob=0.0, **extra)
    return cls(cfg)


def fit(model, batch: dict, steps: int, lr: float = 3e-3) -> float:
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    model.train()
    for _ in range(steps):
        loss = model(**batch).loss
        opt.zero_grad()
        loss.backward()
        opt.step()
    return float(loss.detach())


def encode(texts: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
    enc = TOK(texts, padding=True, return_tensors="pt")
    return enc["input_ids"], enc["attention_mask"]


def test_make_canaries_identifies_each_by_prefix_and_label():
    rng = np.random.default_rng(0)
    labelled = make_canaries(rng, 10, n_labels=4)
    keys = {(c.prefix, c.label) for c in labelled}
    assert len(keys) == 10 and len({c.prefix for c in labelled}) == 3  # groups of at most 4 distinct labels
    unlabelled = make_canaries(rng, 10, n_labels=1)
    assert len({c.prefix for c in unlabelled}) == 10 and all(len(c.secret) == 4 for c in unlabelled)
    assert score_guesses(unlabelled[:2], [unlabelled[0].secret, "????"]) == {
        "reconstruction_rate": 0.5, "per_digit_accuracy": 0.5, "n_reconstructed": 1}


def test_lm_decoding_recovers_memorised_secrets_not_untrained_ones():
    from transformers import BertModel

    canaries = make_canaries(np.random.default_rng(1), 10, n_labels=1)
    texts = [c.text() for c in canaries]
    ids, mask = encode(texts)
    vocab = sorted(set(ids[mask.bool()].tolist()) | set(TOK.convert_tokens_to_ids(list("0123456789"))))

    def lm(seed: int) -> causal_lm.CausalLM:
        decoder = tiny_bert(lambda c: BertModel(c, add_pooling_layer=False), seed, is_decoder=True)
        return causal_lm.CausalLM(decoder, vocab, TOK.vocab_size)

    task = tasks.get("lm")
    trained = lm(0)
    fit(trained, {"input_ids": ids, "attention_mask": mask, "labels": ids.masked_fill(mask == 0, -100)}, steps=100)
    got = invert_lm(task, trained.eval(), TOK, canaries, CPU)
    for method in ("greedy", "beam", "greedy_free"):
        assert score_guesses(canaries, got[method])["reconstruction_rate"] == 1.0
    untrained = invert_lm(task, lm(0).eval(), TOK, canaries, CPU)
    for method in ("greedy", "beam"):
        s = score_guesses(canaries, untrained[method])
        assert s["reconstruction_rate"] == 0.0 and s["per_digit_accuracy"] <= 0.3  # chance 0.1, 40 digits


class PositionalMLP(torch.nn.Module):
    """A classifier over the word embeddings of each position (an MLP on the flattened sequence)."""

    def __init__(self, dim: int = 16, length: int = 16, hidden: int = 64, n_labels: int = 6) -> None:
        super().__init__()
        self.length = length
        self.emb = torch.nn.Embedding(TOK.vocab_size, dim)
        self.mlp = torch.nn.Sequential(torch.nn.Linear(dim * length, hidden), torch.nn.Tanh(),
                                       torch.nn.Linear(hidden, n_labels))

    def get_input_embeddings(self) -> torch.nn.Embedding:
        return self.emb

    def forward(self, input_ids=None, attention_mask=None, inputs_embeds=None, labels=None):
        x = self.emb(input_ids) if inputs_embeds is None else inputs_embeds
        x = torch.nn.functional.pad(x * attention_mask[..., None], (0, 0, 0, self.length - x.shape[1]))
        logits = self.mlp(x.flatten(1))
        loss = None if labels is None else torch.nn.functional.cross_entropy(logits, labels)
        return SimpleNamespace(logits=logits, loss=loss)


def near_misses(secret: str) -> list[str]:
    return [secret[:i] + d + secret[i + 1:] for i in range(len(secret)) for d in "0123456789" if d != secret[i]]


def test_relaxed_inversion_recovers_a_memorised_classifier_secret_not_an_untrained_one():
    rng = np.random.default_rng(2)
    canaries = make_canaries(rng, 5, n_labels=5)  # one shared prefix, five distinct labels
    # memorised: a canary's exact secret gives its label, every secret one digit away is "none" (label 5)
    others = [(c.text(v), 5) for c in canaries for v in near_misses(c.secret)]
    texts = [c.text() for c in canaries] * 8 + [t for t, _ in others]
    labels = torch.tensor([c.label for c in canaries] * 8 + [y for _, y in others])
    ids, mask = encode(texts)
    task = tasks.get("tc")
    torch.manual_seed(0)
    trained = PositionalMLP()
    fit(trained, {"input_ids": ids, "attention_mask": mask, "labels": labels}, steps=200, lr=1e-2)
    with torch.no_grad():
        assert (trained(input_ids=ids, attention_mask=mask).logits.argmax(-1) == labels).all()
    got = score_guesses(canaries, invert_classifier(task, trained.eval(), TOK, canaries, CPU, seed=0))
    assert got["reconstruction_rate"] >= 0.6 and got["per_digit_accuracy"] >= 0.8
    no_refinement = InversionConfig(sweeps=0)
    plain = score_guesses(canaries, invert_classifier(task, trained, TOK, canaries, CPU, seed=0, opt=no_refinement))
    assert plain["per_digit_accuracy"] > 0.2  # the relaxed optimisation alone is already far above chance
    torch.manual_seed(0)
    chance = score_guesses(canaries, invert_classifier(task, PositionalMLP().eval(), TOK, canaries, CPU, seed=0))
    assert chance["reconstruction_rate"] == 0.0 and chance["per_digit_accuracy"] <= 0.35  # chance 0.1, 20 digits


def test_invert_option_needs_an_inversion_capability():
    from fednlp_bench.run import validate_up_front

    with pytest.raises(ConfigError, match=r"privacy.canary_attack=invert needs the task capability "
                                          r"'next_token_logits' or 'embedding_logits', which task 'st'"):
        validate_up_front(config.resolve("st", "smoke", ["privacy.canaries=2", "privacy.canary_attack=invert"]))
    with pytest.raises(ConfigError, match="privacy.canary_attack must be exposure or invert, got 'guess'"):
        config.resolve("tc", "smoke", ["privacy.canaries=2", "privacy.canary_attack=guess"])
    with pytest.raises(ConfigError, match=r"privacy.canary_count must be <= 24, got 25"):
        config.resolve("tc", "smoke", ["privacy.canary_count=25"])
    validate_up_front(config.resolve("lm", "smoke", ["privacy.canaries=2", "privacy.canary_attack=invert"]))


@pytest.mark.slow
@pytest.mark.parametrize("task", ["tc", "lm"])
def test_inversion_smoke_run(task, tiny_overrides):
    import json

    from fednlp_bench.run import run

    overrides = [o for o in tiny_overrides("threads=1", "privacy.canaries=2", "privacy.canary_attack=invert",
                                           "privacy.canary_count=3", "privacy.model_dropout=0.2")
                 if not (task == "lm" and o.startswith("data.max_len"))]
    rec, path = run(config.resolve(task, "smoke", overrides))
    inv = json.loads(path.read_text())["audit"]["canary_inversion"]
    assert inv["n_canaries"] == 3 and inv["copies"] == 2 and len(inv["canaries"]) == 3
    assert inv["client_rounds"] >= 1 and inv["chance"]["per_digit_accuracy"] == pytest.approx(0.1)
    methods = {"tc": {"relaxed_onehot"}, "lm": {"greedy", "beam", "greedy_free"}}[task]
    assert set(inv["methods"]) == methods
    for m in inv["methods"].values():
        assert 0 <= m["reconstruction_rate"] <= 1 and 0 <= m["per_digit_accuracy"] <= 1
    assert rec["fl"]["n_train"] == 64 + 6  # 3 canaries x 2 copies joined the training rows
