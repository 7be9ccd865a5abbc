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
    with pytest.raises(ConfigError, match="support task tc, not 'st'"):
        config.resolve("st", "smoke", ["privacy.canaries=3"])
    with pytest.raises(ConfigError, match="privacy.canaries"):
        config.resolve("tc", "smoke", ["privacy.canaries=-1"])
    with pytest.raises(ConfigError, match="canary_candidates"):
        config.resolve("tc", "smoke", ["privacy.canaries=2", "privacy.canary_candidates=0"])


@pytest.mark.slow
def test_run_reports_canary_lira_and_counterfactual(tiny_overrides):
    from fednlp_bench.run import run

    overrides = tiny_overrides("threads=1", "privacy.audit=true", "privacy.audit_reference_models=1",
                               "privacy.canaries=4", "privacy.canary_candidates=50")
    rec, path = run(config.resolve("tc", "smoke", overrides))
    saved = json.loads(path.read_text())
    canary = saved["audit"]["canary"]
    assert canary["copies"] == 4 and canary["n_candidates"] == 50 and 1 <= canary["rank"] <= 51
    assert canary["client_rounds"] >= 1  # the canary client was actually trained on
    assert 0 <= canary["exposure"] <= canary["max_exposure"]
    assert saved["fl"]["n_train"] == 64 + 4
    lira = saved["audit"]["lira"]
    assert 0 <= lira["auc"] <= 1 and lira["reference_models"] == 1 and lira["n_nonmembers"] == 16
    cf = saved["metrics"]["counterfactual"]
    assert cf["n_test"] == 32 and 0 <= cf["n_affected"] <= cf["n_with_terms"] <= 32
    if cf["n_affected"]:
        assert 0 <= cf["flip_rate"] <= 1 and 0 <= cf["mean_abs_delta_prob"] <= 1
