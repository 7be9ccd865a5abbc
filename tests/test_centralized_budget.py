"""The centralized reference trains on as many examples as the FL run it is compared with."""
from __future__ import annotations

import numpy as np
import pytest

from fednlp_bench import config
from fednlp_bench.centralized import centralized_plan, fl_examples, local_examples
from fednlp_bench.run import centralized_data, prepare, validate_up_front
from fednlp_bench.sampling import CohortSchedule


def test_local_examples_by_hand():
    assert local_examples(50, 2, None, 16) == 100  # two epochs over 50 rows
    assert local_examples(10, 1, 4, 4) == pytest.approx(10 + 10 / 3)  # 3 batches a pass: one pass + 1 batch
    assert local_examples(7, 1, 2, 16) == 14  # a 7-row client's every batch holds 7 rows
    assert local_examples(0, 1, 5, 16) == 0
    assert centralized_plan(1250, 16, 5) == [16, 16, 16, 16, 15]  # ceil(1250 / 16) = 79 steps


def test_dropout_and_sampler_enter_the_budget():
    sizes = np.array([25, 25, 25, 25])
    everyone = CohortSchedule("uniform", 4, seed=0, dropout=0.0)
    half = CohortSchedule("uniform", 4, seed=0, dropout=0.5)  # two of the four report each round
    assert fl_examples(lambda r: sizes, everyone, 3, 1, None, 8) == 3 * 100
    assert fl_examples(lambda r: sizes, half, 3, 1, None, 8) == 3 * 2 * 25
    skewed = np.array([1, 1, 1, 97])
    activity = CohortSchedule("activity", 1, seed=0)
    uniform = CohortSchedule("uniform", 1, seed=0)
    # activity sampling picks the large client far more often (expected 20 x 9412/100 examples against
    # uniform's 20 x 25), so the FL run, and the reference matched to it, see more examples
    assert fl_examples(lambda r: skewed, activity, 20, 1, None, 8) > 2 * fl_examples(lambda r: skewed, uniform,
                                                                                     20, 1, None, 8)


def test_natural_partition_with_one_client_per_group(tmp_path, tiny_overrides):
    groups = ["a"] * 5 + ["b"] * 10 + ["c"] * 30 + ["d"] * 55
    rows = [f"text number {i} about {g},{'x' if i % 2 else 'y'},{g}" for i, g in enumerate(groups)]
    (tmp_path / "train.csv").write_text("text,label,group\n" + "\n".join(rows) + "\n")
    (tmp_path / "test.csv").write_text("text,label,group\n" + "\n".join(rows[:20]) + "\n")
    cfg = config.resolve("tc", None, tiny_overrides(
        f"dataset={tmp_path}", "partition.method=natural", "partition.n_clients=0", "fl.clients_per_round=4",
        "fl.rounds=2", "data.max_train=null", "data.max_test=null", "data.val_fraction=0"))
    validate_up_front(cfg)
    data = centralized_data(cfg, prepare(cfg))
    # all four groups train every round: 2 rounds x 100 rows (the old rule assumed 1 client: 800)
    assert data.budget["examples"] == 200 and data.budget["steps"] == 25
    assert "natural (4 clients)" in data.budget["basis"]
