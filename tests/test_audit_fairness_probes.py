"""Prediction sensitivity, the SEAT effect size, counterfactual data augmentation and the lm/st swap probes."""
from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from fednlp_bench import config, tasks
from fednlp_bench.audit import counterfactual_more as more
from fednlp_bench.audit import seat
from fednlp_bench.audit.cda import augment
from fednlp_bench.audit.sensitivity import feature_weights, prediction_sensitivity, term_positions
from fednlp_bench.config import ConfigError
from fednlp_bench.models import load_tokenizer

TOK = load_tokenizer("minilm-l6")


# --------------------------------------------------------------------------- prediction sensitivity
def test_prediction_sensitivity_of_a_hand_made_model():
    """Two classes, logit(1) - logit(0) = c * x[j, 0]: dp1/dx[j,0] = c p1 (1 - p1) = -dp0/dx[j,0], all else 0."""
    c, j, hidden = 3.0, 2, 5
    x = torch.randn(4, 6, hidden, generator=torch.Generator().manual_seed(0))
    mask = torch.ones(4, 6)

    def logits(e, m):
        return torch.stack([torch.zeros(len(e)), c * e[:, j, 0]], 1)

    p1 = torch.sigmoid(c * x[:, j, 0]).double()
    on_j = torch.zeros(4, 6, dtype=torch.bool)
    on_j[:, j] = True
    w = feature_weights(on_j, hidden)  # 1/H on each coordinate of token j
    got = prediction_sensitivity(logits, x, mask, w)
    # v = (1/2, 1/2): 1/2 |dp0| + 1/2 |dp1| on coordinate (j, 0), weighted 1/H
    assert torch.allclose(got, c * p1 * (1 - p1) / hidden, rtol=1e-6)
    elsewhere = torch.zeros(4, 6, dtype=torch.bool)
    elsewhere[:, j + 1] = True
    assert torch.all(prediction_sensitivity(logits, x, mask, feature_weights(elsewhere, hidden)) == 0)
    only_class1 = prediction_sensitivity(logits, x, mask, w, v=torch.tensor([0.0, 1.0]))
    assert torch.allclose(only_class1, c * p1 * (1 - p1) / hidden, rtol=1e-6)  # |dp1| = |dp0| here
    assert torch.all(feature_weights(torch.zeros(2, 3, dtype=torch.bool), hidden) == 0)


def test_gendered_term_positions_cover_every_piece():
    ids = TOK(["the chairwoman said he would", "nothing here"], padding=True, return_tensors="pt")["input_ids"]
    pos = term_positions(TOK, ids)
    toks = [TOK.convert_ids_to_tokens(row) for row in ids.tolist()]
    marked = [t for t, m in zip(toks[0], pos[0].tolist()) if m]
    assert "he" in marked and "".join(t.removeprefix("##") for t in marked if t != "he") == "chairwoman"
    assert not pos[1].any()


# --------------------------------------------------------------------------- SEAT
def test_seat_effect_size_matches_the_formula_by_hand():
    rng = np.random.default_rng(0)
    x, y, a, b = (rng.normal(size=(n, 3)) for n in (3, 4, 2, 3))

    def cos(u, v):
        return float(u @ v / math.sqrt(float(u @ u) * float(v @ v)))

    def s(w):
        return np.mean([cos(w, ai) for ai in a]) - np.mean([cos(w, bi) for bi in b])

    sx, sy = [s(w) for w in x], [s(w) for w in y]
    both = sx + sy
    mean = sum(both) / len(both)
    sd = math.sqrt(sum((v - mean) ** 2 for v in both) / (len(both) - 1))
    assert seat.effect_size(x, y, a, b) == pytest.approx((np.mean(sx) - np.mean(sy)) / sd)
    assert seat.effect_size(y, x, a, b) == pytest.approx(-seat.effect_size(x, y, a, b))


def test_seat_p_value_separates_associated_from_random_sets():
    rng = np.random.default_rng(1)
    a = np.array([[1.0, 0, 0]]) + 0.1 * rng.normal(size=(8, 3))
    b = np.array([[0, 1.0, 0]]) + 0.1 * rng.normal(size=(8, 3))
    x = np.array([[1.0, 0.2, 0]]) + 0.1 * rng.normal(size=(8, 3))
    y = np.array([[0.2, 1.0, 0]]) + 0.1 * rng.normal(size=(8, 3))
    assert seat.effect_size(x, y, a, b) > 1.5
    assert seat.p_value(x, y, a, b, np.random.default_rng(0), n=2000) < 0.01
    z = rng.normal(size=(16, 3))
    assert 0.05 < seat.p_value(z[:8], z[8:], a, b, np.random.default_rng(0), n=2000) < 0.95
    assert seat.sentences(["man"])[:2] == ["This is man.", "That is man."] and "Man is here." in seat.sentences(["man"])


# --------------------------------------------------------------------------- counterfactual probes for lm and st
def test_loglik_probe_gap_and_direction():
    scores = {"he runs": -10.0, "she runs": -12.0, "her cat": -5.0, "his cat": -4.0, "no terms": 0.0,
              "he and she": -3.0, "she and he": -3.5}
    out = more.loglik_probe(list(scores)[:5] + ["he and she"], lambda t: np.array([scores[s] for s in t]))
    assert out["n_affected"] == 5 and out["n_directional"] == 4  # "he and she" has both genders
    assert out["mean_abs_ll_gap"] == pytest.approx((2 + 2 + 1 + 1 + 0.5) / 5)
    # male version minus female version: 2 (he/she runs), 2 (she/he runs), 1 (his/her cat), 1 (her/his cat)
    assert out["mean_ll_gap_male_minus_female"] == pytest.approx(1.5) and out["male_preference_rate"] == 1.0
    assert more.gender_of_terms("Her son") == 0 and more.gender_of_terms("His.") == 1


def test_tag_probe_counts_changed_words():
    tags = {"Mr Smith spoke": [1, 2, 0], "Mrs Smith spoke": [1, 0, 0], "he ran": [0, 0], "she ran": [0, 0]}
    out = more.tag_probe(["Mr Smith spoke", "he ran", "nobody"], lambda t: [np.array(tags[s]) for s in t])
    assert out["n_affected"] == 2 and out["flip_rate"] == 0.5 and out["word_flip_rate"] == pytest.approx(1 / 5)


# --------------------------------------------------------------------------- counterfactual data augmentation
def test_cda_adds_swapped_copies_to_the_same_client_only():
    tc = tasks.get("tc")
    texts = ["he plays well", "the market fell", "her film won", "rates rose", "his team lost and she left"]
    dsd = tc._split(texts, ["a", "b", "a", "b", "a"], None, split_seed=0, test_fraction=0.2,
                    test=(["test text"], ["a"], None))
    ds = dsd["train"]
    data = tc.encode_texts(texts, ds.data.column("label").to_numpy(), TOK, 32)
    clients = [np.array([0, 1]), np.array([2, 3, 4])]
    out, rows, summary = augment(tc, ds, data, clients, TOK, 32)
    assert summary["copies"] == 3 and summary["clients_with_copies"] == 2 and len(out) == 8
    assert rows[0].tolist() == [0, 1, 5] and rows[1].tolist() == [2, 3, 4, 6, 7]
    decoded = [TOK.decode(out.ragged["input_ids"].get(r), skip_special_tokens=True) for r in (5, 6, 7)]
    assert decoded == ["she plays well", "his film won", "her team lost and he left"]
    assert out.columns["labels"][[5, 6, 7]].tolist() == out.columns["labels"][[0, 2, 4]].tolist()
    with pytest.raises(ConfigError, match="fairness.cda needs the task capability 'counterfactual_copies'"):
        augment(tasks.get("qa"), ds, data, clients, TOK, 32)


def test_cda_copies_reach_the_batches_of_the_client_that_made_them(tiny_overrides):
    """The wiring of a real run (run.build), not just augment(): every client's local epoch covers its own
    rows and its own swapped copies exactly once, and a copy's tokens are its original's swapped text."""
    from fednlp_bench import algorithms
    from fednlp_bench.audit.counterfactual import swap_gender
    from fednlp_bench.run import build
    from fednlp_bench.world import World

    cfg = config.resolve("tc", "smoke", tiny_overrides("threads=1", "model.name=minilm-l3", "fairness.cda=true",
                                                       "data.max_train=61", "partition.n_clients=3",
                                                       "fl.clients_per_round=3", "fl.rounds=1", "fl.batch_size=5"))
    parts = build(cfg, algorithms.get("fedavg")(), World(), torch.device("cpu"))
    sim, texts = parts.trainer, parts.prep.dsd["train"].data.column("text").to_pylist()
    n_orig = len(texts)
    seen, context = {}, sim.local.context

    def record(client, round, n_examples, row_batches, *args, **kwargs):
        seen[client] = [np.asarray(b).copy() for b in row_batches]
        return context(client, round, n_examples, seen[client], *args, **kwargs)

    sim.local.context = record
    sim.start_server()
    sim.run_round(1)
    assert sorted(seen) == [0, 1, 2] and len(sim.local.train_data) == n_orig + parts.cda.sections[("fl", "cda")][
        "copies"]
    n_copies = 0
    for c, batches in seen.items():
        rows = np.concatenate(batches)
        assert sorted(rows.tolist()) == sorted(parts.data.client_train[c].tolist())  # each row once, copies too
        own = [i for i in parts.data.client_train[c] if i < n_orig]
        swapped = [swap_gender(texts[i])[0] for i in own if swap_gender(texts[i])[1] > 0]
        copies = [i for i in parts.data.client_train[c] if i >= n_orig]  # appended in the client's row order
        assert len(copies) == len(swapped)
        for row, text in zip(copies, swapped):
            ids = sim.local.train_data.ragged["input_ids"].get(row)
            assert ids.tolist() == TOK(text, truncation=True, max_length=cfg.data.max_len)["input_ids"]
        n_copies += len(copies)
    assert n_copies > 0


# --------------------------------------------------------------------------- capability gates
def test_options_are_gated_by_task_capabilities():
    from fednlp_bench.run import validate_up_front

    for task in ("st", "qa", "s2s", "lm"):  # membership inference, LiRA and canaries on every task
        validate_up_front(config.resolve(task, "smoke", ["privacy.audit=true", "privacy.audit_reference_models=1",
                                                         "privacy.canaries=2"]))
    with pytest.raises(ConfigError, match=r"fairness.cda needs the task capability 'counterfactual_copies', "
                                          r"which task 'qa' does not declare"):
        validate_up_front(config.resolve("qa", "smoke", ["fairness.cda=true"]))
    with pytest.raises(ConfigError, match="fairness.sensitivity needs the task capability 'embedding_logits'"):
        validate_up_front(config.resolve("lm", "smoke", ["fairness.sensitivity=true"]))
    with pytest.raises(ConfigError, match="fairness.cda must be bool, got 1"):
        config.resolve("tc", "smoke", ["fairness.cda=1"])
    with pytest.raises(ConfigError, match="fairness.cda needs the static setting"):
        config.resolve("tc", "smoke", ["fairness.cda=true", "fl.continual=true"])
    with pytest.raises(ValueError, match="unknown task capability 'loss'"):
        tasks.get("tc").supports("loss")


@pytest.mark.slow
def test_sensitivity_cda_and_intrinsic_in_a_smoke_run(tiny_overrides):
    from fednlp_bench.run import run

    overrides = tiny_overrides("threads=1", "fairness.cda=true", "fairness.sensitivity=true", "fairness.intrinsic=true")
    rec, path = run(config.resolve("tc", "smoke", overrides))
    saved = json.loads(path.read_text())
    cda, ps = saved["fl"]["cda"], saved["metrics"]["prediction_sensitivity"]
    assert 0 < cda["copies"] <= 64 and saved["fl"]["n_train"] == 64 + cda["copies"]
    assert ps["n_test"] == 32 and ps["accumulated"] >= 0 and ps["n_affected"] >= 1
    assert set(saved["metrics"]["intrinsic_bias"]["tests"]) == set(seat.ATTRIBUTES)


@pytest.mark.slow
@pytest.mark.parametrize("task", ["st", "qa", "s2s", "lm"])
def test_membership_lira_and_canary_audits_run_on_every_task(task, tiny_overrides):
    from fednlp_bench.run import run

    overrides = [o for o in tiny_overrides("threads=1", "model.name=minilm-l3", "privacy.audit=true",
                                           "privacy.audit_reference_models=1",
                                           "privacy.canaries=2", "privacy.canary_candidates=20")
                 if not o.startswith(("data.max_len", "data.max_train", "data.max_test"))]
    rec, path = run(config.resolve(task, "smoke", overrides))
    audit = json.loads(path.read_text())["audit"]
    assert 0 <= audit["example"]["auc"] <= 1 and 0 <= audit["lira"]["auc"] <= 1
    assert audit["canary"]["n_candidates"] == 20 and 1 <= audit["canary"]["rank"] <= 21
