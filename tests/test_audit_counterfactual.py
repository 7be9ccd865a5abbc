"""Counterfactual gender-swap probe, canary insertion and offline LiRA wired into a run."""
from __future__ import annotations

import json

import numpy as np
import pytest

from fednlp_bench import config
from fednlp_bench.audit.counterfactual import GENDER_PAIRS, counterfactual_probe, swap_gender, swap_table
from fednlp_bench.batching import Ragged, TokenizedData
from fednlp_bench.config import ConfigError


def test_swap_is_whole_word_and_keeps_case():
    text, n = swap_gender("He told his Wife: HE said the chairman, not Mrs Hewitt, hes.")
    assert text == "She told her Husband: SHE said the chairwoman, not Mr Hewitt, hes."
    assert n == 6
    assert swap_gender("the theme of history")[1] == 0  # 'he' inside words is untouched
    assert swap_gender("her book")[0] == "his book"


def test_table_is_symmetric_except_her():
    table = swap_table()
    for male, female in GENDER_PAIRS:
        assert table[male] == female
        if female != "her":
            assert table[female] == male
    assert table["her"] == "his" and table["him"] == "her"


def test_probe_counts_flips_and_probability_change():
    def probabilities(texts):  # class 1 iff the text mentions "she"; confidence 0.9
        return np.array([[0.1, 0.9] if " she " in f" {t.lower()} " else [0.8, 0.2] for t in texts])

    out = counterfactual_probe(["he runs", "no terms here", "she sings", "the man"], probabilities)
    assert out["n_test"] == 4 and out["n_affected"] == 3
    # he->she flips (p of class 0: 0.8 -> 0.1), she->he flips (class 1: 0.9 -> 0.2), man->woman does not
    assert out["flip_rate"] == pytest.approx(2 / 3)
    assert out["mean_abs_delta_prob"] == pytest.approx((0.7 + 0.7 + 0.0) / 3)
    none = counterfactual_probe(["nothing"], probabilities)
    assert none["n_affected"] == 0 and none["flip_rate"] is None
    kept = counterfactual_probe(["he runs", "the man"], probabilities, keep=lambda a, b: "man" not in a)
    assert kept["n_with_terms"] == 2 and kept["n_affected"] == 1 and kept["flip_rate"] == 1.0


def test_tokenized_data_concat():
    a = TokenizedData({"input_ids": Ragged.from_lists([[1, 2], [3]])}, {"labels": np.array([0, 1])})
    b = TokenizedData({"input_ids": Ragged.from_lists([[4, 5, 6]])}, {"labels": np.array([2])})
    c = a.concat(b)
    assert len(c) == 3 and c.ragged["input_ids"].get(2).tolist() == [4, 5, 6]
    assert c.ragged["input_ids"].get(1).tolist() == [3] and c.columns["labels"].tolist() == [0, 1, 2]
    with pytest.raises(ValueError, match="columns"):
        a.concat(TokenizedData({"input_ids": Ragged.from_lists([[1]])}, {}))


def test_audit_options_are_checked():
    with pytest.raises(ConfigError, match="privacy.audit_reference_models needs privacy.audit"):
        config.resolve("tc", "smoke", ["privacy.audit_reference_models=2"])
    from fednlp_bench.run import validate_up_front

    with pytest.raises(ConfigError, match="fairness.sensitivity needs the task capability 'embedding_logits'"):
        validate_up_front(config.resolve("st", "smoke", ["fairness.sensitivity=true"]))  # capabilities, not names
    with pytest.raises(ConfigError, match="privacy.canaries"):
        config.resolve("tc", "smoke", ["privacy.canaries=-1"])
    with pytest.raises(ConfigError, match="canary_candidates"):
        config.resolve("tc", "smoke", ["privacy.canaries=2", "privacy.canary_candidates=0"])


def _losses_and_predictions(model, task, data, rows, pad_id):
    """Per-example cross-entropy and argmax of the model, computed here from the logits (no audit code)."""
    import torch
    import torch.nn.functional as F

    model.eval()
    with torch.no_grad():
        batch = task.collate(data, np.asarray(rows), pad_id)
        logits = model(**{k: v for k, v in batch.items() if k != "labels"}).logits.double()
        return F.cross_entropy(logits, batch["labels"], reduction="none").numpy(), logits.argmax(-1).numpy()


@pytest.mark.slow
def test_run_reports_canary_lira_and_counterfactual(tiny_overrides, monkeypatch):
    """A real tiny run with every audit; each reported number is recomputed here from the final global
    model with independent code (direct forward passes, sklearn's ROC-AUC, the exposure formula)."""
    import math

    from sklearn.metrics import roc_auc_score

    from fednlp_bench import sampling
    from fednlp_bench.audit import run_audit
    from fednlp_bench.audit.canaries import candidate_secrets
    from fednlp_bench.run import run

    seen = {}
    original = run_audit.canary_exposure

    def keep(finished, inserted):
        seen.update(finished=finished, inserted=inserted)
        return original(finished, inserted)

    monkeypatch.setattr(run_audit, "canary_exposure", keep)
    overrides = tiny_overrides("threads=1", "privacy.audit=true", "privacy.audit_reference_models=1",
                               "privacy.canaries=4", "privacy.canary_candidates=50")
    rec, path = run(config.resolve("tc", "smoke", overrides))
    saved = json.loads(path.read_text())
    sim, inserted = seen["finished"], seen["inserted"]  # the read-only view of the finished run
    prep, cfg = sim.prepared, sim.cfg
    sim.load_global()
    model, task = sim.model, sim.task
    assert saved["fl"]["n_train"] == 64 + 4

    # canary: rank of the secret among the 50 candidates by the model's loss, and its exposure in bits
    canary = saved["audit"]["canary"]
    c = inserted["canary"]
    cands = candidate_secrets(np.random.default_rng([cfg.seed, 104729, 1]), c, 50)
    texts = [c.text()] + [c.text(x) for x in cands]
    data = task.encode_texts(texts, [c.label] * len(texts), prep.tokenizer, cfg.data.max_len)
    losses, _ = _losses_and_predictions(model, task, data, np.arange(len(texts)), sim.pad_id)
    rank = 1 + (losses[1:] < losses[0]).sum() + 0.5 * (losses[1:] == losses[0]).sum()
    assert canary["rank"] == rank and canary["exposure"] == pytest.approx(math.log2(51 / rank))
    rounds_in = sum(inserted["client"] in sampling.sample("uniform", r, np.array([len(x) for x in sim.client_train]),
                                                          2, sampling.round_rng(cfg.seed, r)) for r in (1, 2))
    assert canary["client_rounds"] == rounds_in >= 1

    # loss-threshold attack: members = rows of clients sampled in some round, non-members = test rows
    sizes = np.array([len(x) for x in sim.client_train])
    took_part = set().union(*(sampling.sample("uniform", r, sizes, 2, sampling.round_rng(cfg.seed, r)).tolist()
                              for r in (1, 2)))
    members = np.concatenate([sim.client_train[k] for k in sorted(took_part)])
    mem_loss, _ = _losses_and_predictions(model, task, sim.train_data, members, sim.pad_id)
    out_loss, _ = _losses_and_predictions(model, task, sim.test_data, np.arange(32), sim.pad_id)
    auc = roc_auc_score(np.r_[np.ones(len(mem_loss)), np.zeros(len(out_loss))], -np.r_[mem_loss, out_loss])
    assert saved["audit"]["example"]["auc"] == pytest.approx(auc, abs=1e-6)

    # LiRA: audited sets and the reference models' budget (as many passes per row as the target's members)
    lira = saved["audit"]["lira"]
    assert lira["n_members"] == len(members) and lira["n_nonmembers"] == 16 and lira["reference_rows"] == 16
    passes = saved["cost"]["train_examples"] / len(members)
    assert lira["target_passes_per_member_example"] == pytest.approx(passes, abs=1e-3)
    assert lira["reference_steps"] == max(1, round(passes * 16 / 8))
    assert "calibration" in lira["calibration_note"] or "calibrated" in lira["calibration_note"]

    # counterfactual probe: prediction flips under the gender swap, over texts where the swap is visible
    from fednlp_bench.audit.counterfactual import swap_gender

    cf = saved["metrics"]["counterfactual"]
    originals = prep.dsd["test"].data.column("text").to_pylist()
    pairs = [(t, swap_gender(t)[0]) for t in originals]
    tok = prep.tokenizer
    visible = [(a, b) for a, b in pairs if a != b
               and tok(a, truncation=True, max_length=cfg.data.max_len)["input_ids"]
               != tok(b, truncation=True, max_length=cfg.data.max_len)["input_ids"]]
    assert cf["n_test"] == 32 and cf["n_affected"] == len(visible)
    if visible:
        both = task.encode_texts([a for a, _ in visible] + [b for _, b in visible], np.zeros(2 * len(visible)),
                                 tok, cfg.data.max_len)
        both.columns["labels"] = both.columns["labels"].astype(np.int64)
        _, pred = _losses_and_predictions(model, task, both, np.arange(2 * len(visible)), sim.pad_id)
        assert cf["flip_rate"] == pytest.approx(float(np.mean(pred[: len(visible)] != pred[len(visible):])))
