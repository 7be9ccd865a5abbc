"""Client samplers, dropout and the continual setting (unit level and through the engine)."""
from __future__ import annotations

import numpy as np
import pytest

from fednlp_bench import config, sampling
from fednlp_bench.algorithms.base import Algorithm
from fednlp_bench.algorithms.harness import tiny_simulator
from fednlp_bench.config import ConfigError
from fednlp_bench.continual import ContinualClients


# --------------------------------------------------------------------------- samplers
@pytest.mark.parametrize("name", ["uniform", "activity"])
def test_samplers_draw_distinct_available_clients(name):
    sizes = np.array([5, 0, 3, 8, 0, 1, 2, 9])
    for round in range(1, 30):
        cohort = sampling.sample(name, round, sizes, 4, sampling.round_rng(0, round))
        assert len(cohort) == 4 and len(set(cohort.tolist())) == 4
        assert (sizes[cohort] > 0).all()
    # more asked than available: every available client, once
    assert sampling.sample(name, 1, sizes, 10, sampling.round_rng(0, 1)).tolist() == [0, 2, 3, 5, 6, 7]


@pytest.mark.parametrize("name", ["uniform", "activity"])
def test_cohort_is_a_function_of_seed_and_round(name):
    sizes = np.arange(1, 21)
    draw = lambda seed, r: sampling.sample(name, r, sizes, 5, sampling.round_rng(seed, r)).tolist()  # noqa: E731
    assert draw(3, 7) == draw(3, 7)
    assert len({tuple(draw(3, r)) for r in range(1, 11)}) > 5  # rounds differ
    assert [draw(4, r) for r in range(1, 6)] != [draw(3, r) for r in range(1, 6)]  # seeds differ


def test_activity_sampling_is_proportional_to_sizes():
    sizes = np.array([1, 2, 3, 4, 0, 10])
    rng = np.random.default_rng(0)
    n = 20000
    counts = np.bincount(np.concatenate([sampling.activity(1, sizes, 1, rng) for _ in range(n)]), minlength=6)
    np.testing.assert_allclose(counts / n, sizes / sizes.sum(), atol=0.01)
    assert counts[4] == 0
    # with k > 1 (successive draws without replacement) larger clients are still more likely to be picked
    inclusion = np.zeros(6)
    for _ in range(4000):
        inclusion[sampling.activity(1, sizes, 2, rng)] += 1
    assert np.all(np.diff(inclusion[[0, 1, 2, 3, 5]]) > 0)
    uniform = np.zeros(6)
    for _ in range(4000):
        uniform[sampling.uniform(1, sizes, 2, rng)] += 1
    assert np.ptp(uniform[[0, 1, 2, 3, 5]]) / 4000 < 0.06  # uniform ignores sizes


def test_registered_sampler_is_used_and_checked():
    @sampling.register("test-largest")
    def largest(round, sizes, k, rng):
        return np.argsort(sizes)[::-1][:k]

    try:
        assert "test-largest" in sampling.available()
        assert sampling.sample("test-largest", 1, np.array([3, 9, 1, 5]), 2, np.random.default_rng(0)).tolist() == [1, 3]
        with pytest.raises(sampling.SamplerError, match="already registered"):
            sampling.register("test-largest")(lambda *a: None)

        @sampling.register("test-twice")
        def twice(round, sizes, k, rng):
            return np.array([0, 0])

        with pytest.raises(sampling.SamplerError, match="'test-twice' returned a client twice"):
            sampling.sample("test-twice", 1, np.array([3, 9]), 2, np.random.default_rng(0))
        sim = tiny_simulator(Algorithm(), sampler="test-largest", client_sizes=[4, 12, 8, 16], clients_per_round=2)
        seen = _record_clients(sim, rounds=1)
        assert seen == {(1, 3, 16), (1, 1, 12)}
    finally:
        sampling.SAMPLERS.remove("test-largest")
        sampling.SAMPLERS.remove("test-twice")


def test_unknown_sampler_suggests_a_name():
    with pytest.raises(sampling.SamplerError, match="did you mean 'activity'"):
        sampling.get("activty")


# --------------------------------------------------------------------------- dropout
def test_dropout_removes_a_fraction_but_keeps_one():
    cohort = np.arange(10, 20)
    kept, dropped = sampling.drop_out(cohort, 0.3, sampling.dropout_rng(0, 1))
    assert len(dropped) == 3 and sorted([*kept, *dropped]) == cohort.tolist()
    again = sampling.drop_out(cohort, 0.3, sampling.dropout_rng(0, 1))
    assert again[1].tolist() == dropped.tolist()
    assert len(sampling.drop_out(cohort[:2], 0.9, sampling.dropout_rng(0, 1))[0]) == 1
    assert len(sampling.drop_out(cohort, 0.0, sampling.dropout_rng(0, 1))[1]) == 0


def test_engine_completes_rounds_without_dropped_clients_and_counts_them():
    sim = tiny_simulator(Algorithm(), n_clients=8, clients_per_round=4, dropout=0.5, rounds=3, local_steps=1)
    seen = _record_clients(sim, rounds=3)
    assert len(seen) == 3 * 2
    assert sim.state.costs.dropped_clients == 3 * 2
    assert sim.state.costs.bytes_down == 3 * 4 * sim.global_params.numel() * 4  # all sampled got the broadcast


# --------------------------------------------------------------------------- continual setting
def test_continual_fixed_arrival_in_order_with_oldest_deleted_first():
    rows = [np.arange(100, 125), np.arange(200, 206)]
    view = ContinualClients(rows, rate=4, rounds=10, rng=np.random.default_rng(0), storage_cap=10)
    assert view.sizes(1).tolist() == [4, 4]
    assert view.rows(0, 1).tolist() == [100, 101, 102, 103]
    assert view.rows(0, 2).tolist() == list(range(100, 108))
    assert view.rows(0, 3).tolist() == list(range(102, 112))  # 12 arrived, the 2 oldest deleted
    assert view.rows(0, 7).tolist() == list(range(115, 125))  # all 25 arrived, the newest 10 kept
    assert view.rows(1, 2).tolist() == list(range(200, 206))  # client owns only 6
    assert view.sizes(6).tolist() == [10, 6]
    no_cap = ContinualClients(rows, rate=2.5, rounds=10, rng=np.random.default_rng(0))
    assert [no_cap.sizes(r)[0] for r in (1, 2, 3, 4)] == [2, 5, 7, 10]
    assert no_cap.rows(0, 4).tolist() == list(range(100, 110))


def test_continual_random_order_and_poisson_arrivals_are_seeded():
    rows = [np.arange(50), np.arange(50, 80)]
    make = lambda seed: ContinualClients(rows, rate=3, rounds=12, rng=np.random.default_rng(seed),  # noqa: E731
                                         storage_cap=8, arrival="poisson", order="random")
    a, b, c = make(1), make(1), make(2)
    assert all(a.rows(i, r).tolist() == b.rows(i, r).tolist() for i in (0, 1) for r in range(13))
    assert any(a.rows(0, r).tolist() != c.rows(0, r).tolist() for r in range(1, 13))
    assert sorted(a.stream[0].tolist()) == list(range(50))  # a permutation of the client's rows
    arrived = a.arrived
    assert (np.diff(arrived, axis=1) >= 0).all() and (arrived[:, 0] == 0).all()
    for r in range(1, 13):  # always the newest <= 8 arrived rows, in arrival order
        n = arrived[0, r]
        assert a.rows(0, r).tolist() == a.stream[0][max(0, n - 8) : n].tolist()


class _Recorder(Algorithm):
    """Records (round, client, n_examples) of every client that reports."""

    def __init__(self, hparams=None):
        super().__init__(hparams)
        self.seen: set[tuple[int, int, int]] = set()

    def client_update(self, ctx):
        self.seen.add((ctx.round, ctx.client_id, ctx.n_examples))
        return super().client_update(ctx)


def _record_clients(sim, rounds: int) -> set[tuple[int, int, int]]:
    rec = _Recorder()
    sim.algorithm = rec
    rec.init_server(sim.global_params)
    for r in range(1, rounds + 1):
        sim.run_round(r)
    return rec.seen


def test_engine_trains_on_the_continual_view():
    sim = tiny_simulator(Algorithm(), client_sizes=[30, 30, 30, 6], clients_per_round=4, rounds=5, local_steps=1,
                         continual=True, arrival_per_round=4, storage_cap=10, sampler="activity")
    seen = _record_clients(sim, rounds=5)
    expected = {(r, i, min(4 * r, 10, 6 if i == 3 else 30)) for r in range(1, 6) for i in range(4)}
    assert seen == expected


def test_round_without_any_data_leaves_the_model_unchanged():
    sim = tiny_simulator(Algorithm(), n_clients=3, clients_per_round=2, local_steps=1, sampler="activity",
                         continual=True, arrival_per_round=0.5)  # nothing has arrived in round 1
    x0 = sim.global_params.clone()
    seen = _record_clients(sim, rounds=2)
    assert {r for r, _, _ in seen} == {2} and not sim.state.failures
    assert not (sim.global_params == x0).all()


def test_continual_options_from_the_command_line():
    cfg = config.resolve("tc", "smoke", ["fl.continual=true", "fl.storage_cap=50", "fl.arrival_per_round=10",
                                         "fl.arrival=poisson", "fl.arrival_order=random", "fl.dropout=0.25"])
    assert (cfg.fl.continual, cfg.fl.storage_cap, cfg.fl.arrival_per_round) == (True, 50, 10)
    with pytest.raises(ConfigError, match="fl.storage_cap applies to the continual setting only"):
        config.resolve("tc", "smoke", ["fl.storage_cap=50"])
    with pytest.raises(ConfigError, match=r"fl.dropout must be in \[0, 1\)"):
        config.resolve("tc", "smoke", ["fl.dropout=1.0"])
    with pytest.raises(ConfigError, match="fl.arrival must be fixed or poisson"):
        config.resolve("tc", "smoke", ["fl.continual=true", "fl.arrival=burst"])
    with pytest.raises(ConfigError, match="fl.arrival_per_round must be > 0"):
        config.resolve("tc", "smoke", ["fl.continual=true", "fl.arrival_per_round=0"])


@pytest.mark.slow
def test_record_states_setting_sampler_and_dropouts(tiny_overrides):
    from fednlp_bench.run import run

    cfg = config.resolve("tc", "smoke", tiny_overrides(
        "fl.rounds=2", "fl.clients_per_round=4", "fl.local_steps=1", "fl.sampler=activity", "fl.dropout=0.5",
        "fl.continual=true", "fl.arrival_per_round=4", "fl.storage_cap=6"))
    record, _ = run(cfg)
    fl = record["fl"]
    assert (fl["sampler"], fl["setting"], fl["dropout"]) == ("activity", "continual", 0.5)
    assert fl["continual"] == {"setting": "continual", "arrival": "fixed", "arrival_per_round": 4.0,
                               "arrival_order": "chronological", "storage_cap": 6}
    assert record["metrics"]["dropped_clients"] == 2 * 2
