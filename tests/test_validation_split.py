"""The validation split: carved from train (stratified, seeded), used for every per-round choice;
the test split is scored once, on the final model."""
from __future__ import annotations

import numpy as np
import pytest

from fednlp_bench import config, tasks
from fednlp_bench.run import load_splits, run
from fednlp_bench.tasks.base import TaskAdapter


def test_validation_rows_are_stratified_seeded_and_capped():
    tc = tasks.get("tc")
    dsd = tc.load("bbc", split_seed=0, test_fraction=0.2)
    labels = np.asarray(tc.label_for_partition(dsd["train"]))
    rows = tc.validation_rows(dsd["train"], 0.1, seed=0)
    assert len(rows) == round(0.1 * len(labels)) and len(np.unique(rows)) == len(rows)
    for name in np.unique(labels):  # every class keeps its share, to within one row
        assert abs((labels[rows] == name).sum() - 0.1 * (labels == name).sum()) < 1.0 + 1e-9
    assert np.array_equal(rows, tc.validation_rows(dsd["train"], 0.1, seed=0))
    assert not np.array_equal(rows, tc.validation_rows(dsd["train"], 0.1, seed=1))
    assert len(tc.validation_rows(dsd["train"], 0.1, seed=0, limit=37)) == 37
    assert len(tc.validation_rows(dsd["train"], 0.0, seed=0)) == 0


def test_splits_are_disjoint_and_independent_of_the_run_seed(tiny_overrides):
    full = tasks.get("tc").load("bbc", split_seed=0, test_fraction=0.2)
    counts: dict[str, int] = {}
    for text in full["train"].data.column("text").to_pylist():
        counts[text] = counts.get(text, 0) + 1
    held_out = []
    for seed in (0, 5):
        cfg = config.resolve("tc", "smoke", tiny_overrides("data.max_train=null", f"seed={seed}"))
        _, dsd = load_splits(cfg)
        texts = {name: dsd[name].data.column("text").to_pylist() for name in ("train", "validation", "test")}
        assert len(texts["train"]) + len(texts["validation"]) == len(full["train"])
        # BBC News holds some articles twice; only such duplicates may appear on both sides
        assert all(counts[t] > 1 for t in set(texts["validation"]) & set(texts["train"]))
        held_out.append(texts["validation"])
    assert held_out[0] == held_out[1]  # the same validation rows whatever the run seed


@pytest.mark.slow
def test_test_split_is_scored_once_on_the_final_model(tiny_overrides, monkeypatch):
    calls: list[int] = []
    original = TaskAdapter.predict

    def spy(self, model, data, rows, *args, **kwargs):
        calls.append(len(rows))
        return original(self, model, data, rows, *args, **kwargs)

    monkeypatch.setattr(TaskAdapter, "predict", spy)
    cfg = config.resolve("tc", "smoke", tiny_overrides("fl.rounds=3", "data.max_val=20", "data.max_test=31",
                                                       "fl.best_val_test=true", "fairness.counterfactual=false"))
    record, _ = run(cfg)
    n_val, n_test = record["fl"]["n_val"], record["fl"]["n_test"]
    assert (n_val, n_test) == (20, 31)
    # round 0 and rounds 1-3 on validation; then the final model and the best-validation model on test
    assert calls == [n_val] * 4 + [n_test] * 2
    assert all(row["split"] == "val" for row in record["metrics"]["per_round"])
    best = record["metrics"]["best_val"]
    values = [row["accuracy"] for row in record["metrics"]["per_round"]]
    assert best["round"] == 1 + int(np.argmax(values)) and best["val"] == max(values)
    assert record["metrics"]["final_split"] == "test"
