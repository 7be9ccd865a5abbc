"""User-level DP-FedAvg (clip, noise, adaptive clip), accounting, config and an end-to-end run."""
from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from fednlp_bench import config
from fednlp_bench.config import ConfigError
from fednlp_bench.privacy import accounting
from fednlp_bench.privacy.user_level import UserDPParams, UserLevelDP


def test_clip_update_clips_large_and_keeps_small_deltas():
    dp = UserLevelDP(UserDPParams(clip=1.0, noise_multiplier=0.0, expected_clients=2), seed=0)
    big, small = torch.full((4,), 3.0), torch.tensor([0.1, 0.2, 0.0, 0.0])
    assert dp.clip_update(big) == pytest.approx(6.0)
    assert float(big.norm()) == pytest.approx(1.0)
    before = small.clone()
    dp.clip_update(small)
    assert torch.equal(small, before)
    assert dp.unclipped_count == 1
    with pytest.raises(FloatingPointError):
        dp.clip_update(torch.tensor([float("nan")]))


def test_noise_is_seeded_scaled_and_uses_fixed_denominator():
    params = UserDPParams(clip=0.5, noise_multiplier=2.0, expected_clients=10)
    totals = []
    for _ in range(2):
        dp = UserLevelDP(params, seed=7)
        total = torch.zeros(200_000)
        denominator = dp.noise_sum(total, round=3, n_clients=4)
        totals.append(total)
    assert denominator == 10.0
    assert torch.equal(totals[0], totals[1])
    assert float(totals[0].std()) == pytest.approx(1.0, rel=0.02)  # sigma * C
    other = torch.zeros(200_000)
    UserLevelDP(params, seed=7).noise_sum(other, round=4, n_clients=4)
    assert not torch.equal(other, totals[0])


def test_adaptive_clip_moves_geometrically_towards_the_quantile():
    params = UserDPParams(clip=1.0, noise_multiplier=0.0, expected_clients=4, adaptive=True,
                          target_quantile=0.5, clip_lr=0.2, count_stddev=1e-12)
    dp = UserLevelDP(params, seed=0)
    for _ in range(4):
        dp.clip_update(torch.tensor([0.1]))  # all unclipped: the clip is too large
    dp.noise_sum(torch.zeros(3), round=1, n_clients=4)
    assert dp.clip == pytest.approx(math.exp(-0.2 * 0.5))
    for _ in range(4):
        dp.clip_update(torch.tensor([10.0]))  # all clipped: grow
    dp.noise_sum(torch.zeros(3), round=2, n_clients=4)
    assert dp.clip == pytest.approx(math.exp(-0.2 * 0.5) * math.exp(0.2 * 0.5))
    assert [h.unclipped_fraction for h in dp.history] == [1.0, 0.0]


def _dp_accounting_epsilon(sigma: float, q: float, steps: int, delta: float, accountant: str = "pld") -> float:
    """epsilon of `steps` Poisson-subsampled Gaussians, built with dp-accounting directly (not our wrapper)."""
    import dp_accounting
    from dp_accounting.pld import pld_privacy_accountant
    from dp_accounting.rdp import rdp_privacy_accountant

    event = dp_accounting.SelfComposedDpEvent(
        dp_accounting.PoissonSampledDpEvent(q, dp_accounting.GaussianDpEvent(sigma)), steps)
    acc = (pld_privacy_accountant.PLDAccountant(value_discretization_interval=1e-4) if accountant == "pld"
           else rdp_privacy_accountant.RdpAccountant())
    return float(acc.compose(event).get_epsilon(delta))


def _runtime(n_clients=10, per_round=5, rounds=5, sizes=None, **privacy):
    from fednlp_bench.config import PrivacyConfig
    from fednlp_bench.privacy.runtime import PrivacyRuntime

    pcfg = PrivacyConfig(user_level=True, **privacy)
    return PrivacyRuntime(pcfg, seed=0, client_sizes=sizes if sizes is not None else [50] * n_clients,
                          clients_per_round=per_round, rounds=rounds, batch_size=16, local_epochs=1, local_steps=None,
                          sampler="uniform", n_train=500)


def _b_hat(dp: UserLevelDP, n_clients: int, unclipped: int, round: int) -> float:
    """The noised unclipped fraction the mechanism used, read back from its clip update."""
    p, before = dp.params, dp.clip
    dp.noise_sum(torch.zeros(1), round=round, n_clients=n_clients, unclipped=unclipped)
    b_hat = p.target_quantile - math.log(dp.clip / before) / p.clip_lr
    dp.clip = before
    return b_hat


def test_clipped_count_has_sensitivity_one_half():
    """Andrew et al. 2021 / TF-Privacy's QuantileEstimatorQuery: the count is of centred bits b_i - 1/2,
    so adding one client (clipped or not) moves m * b_hat by exactly 1/2 for the same noise draw.
    A raw count moves it by 1 (unclipped client) or 0, i.e. sensitivity 1."""
    p = UserDPParams(clip=1.0, noise_multiplier=1.0, expected_clients=20, adaptive=True, count_stddev=1.0)
    dp = UserLevelDP(p, seed=3)
    moves = []
    for round in range(1, 30):
        base = _b_hat(dp, 20, 10, round)  # the same generator state for the three cohorts of a round
        moves.append(20 * (_b_hat(dp, 21, 11, round) - base))  # one more client, unclipped
        moves.append(20 * (_b_hat(dp, 21, 10, round) - base))  # one more client, clipped
    assert np.allclose(np.abs(moves), 0.5, atol=1e-9), sorted(set(np.round(moves, 6)))


def test_noised_fraction_is_clamped_to_the_unit_interval():
    """With a huge count noise the estimate is clamped to [0, 1], so the clip moves by at most
    exp(eta * gamma) up and exp(-eta * (1 - gamma)) down per round."""
    p = UserDPParams(clip=1.0, noise_multiplier=0.0, expected_clients=4, adaptive=True, target_quantile=0.3,
                     clip_lr=0.2, count_stddev=1e4)
    dp = UserLevelDP(p, seed=0)
    ratios = []
    for round in range(1, 40):
        before = dp.clip
        dp.noise_sum(torch.zeros(1), round=round, n_clients=4, unclipped=2)
        ratios.append(dp.clip / before)
    assert min(ratios) == pytest.approx(math.exp(-0.2 * 0.7)) and max(ratios) == pytest.approx(math.exp(0.2 * 0.3))


def test_adaptive_clipping_epsilon_matches_dp_accounting_for_the_measured_mechanism():
    """The documented quick example (10 clients, 5 per round, 5 rounds, target epsilon 8, clipped-count
    noise 1): measure the mechanism the run applies - the update noise multiplier from the noise it adds,
    the count noise from its spread, the count's sensitivity from neighbouring cohorts - compose the two
    Gaussians (sigma^-2 = sigma_u^-2 + (s / sigma_b)^2) and ask dp-accounting for epsilon at the record's
    delta. It must be the epsilon the record reports (with a raw count, s = 1: 9.4 instead of 8 at delta 0.1)."""
    rt = _runtime(user_target_epsilon=8.0, adaptive_clip=True, clip_count_noise=1.0, user_clip=0.5)
    user = rt.summary()["user_level"]
    assert user["epsilon"] <= 8.0 + 1e-6
    dp = rt.user
    total = torch.zeros(400_000, dtype=torch.float64)
    dp.noise_sum(total, round=1, n_clients=5, unclipped=2)
    dp.clip = 0.5
    sigma_u = float(total.std()) / 0.5
    spread = np.std([5 * _b_hat(dp, 5, 2, r) for r in range(2, 4002)])
    sensitivity = max(abs(5 * (_b_hat(dp, 6, k, r) - _b_hat(dp, 5, 2, r))) for r in (1, 2, 3) for k in (2, 3))
    sigma = (sigma_u**-2 + (sensitivity / spread) ** 2) ** -0.5
    want = _dp_accounting_epsilon(sigma, 5 / 10, 5, user["delta"])
    assert user["epsilon"] == pytest.approx(want, rel=0.03)


def test_too_small_count_noise_is_rejected():
    with pytest.raises(ValueError, match="too small"):
        UserLevelDP(UserDPParams(clip=1.0, noise_multiplier=1.0, expected_clients=4, adaptive=True), seed=0)


def test_default_delta_is_well_below_one_over_n():
    """delta = 1/N lets a mechanism publish one random record in full; the default is min(1e-5, N^-1.1)."""
    rt = _runtime(n_clients=10, user_noise=1.0)
    assert rt.user_delta == 1e-5 and rt.sample_delta == 1e-5
    rec = rt.summary()["user_level"]
    assert rec["delta"] == 1e-5 and "min(1e-5" in rec["delta_note"]
    assert rec["epsilon"] == pytest.approx(_dp_accounting_epsilon(1.0, 0.5, 5, 1e-5), rel=0.02)
    big = _runtime(n_clients=400_000, per_round=100, rounds=1, user_noise=1.0)
    assert big.user_delta == pytest.approx(400_000 ** -1.1) and big.user_delta < 1e-6
    assert _runtime(n_clients=10, user_noise=1.0, delta=0.01).user_delta == 0.01  # explicit value wins


def test_sampling_rate_counts_only_clients_that_can_be_sampled():
    """The uniform sampler never picks a client with 0 rows: with 3 of 6 clients empty and 2 per round,
    a client with data is in a round's cohort with probability 2/3, not 2/6 (measured on the engine's
    sampler); the guarantee must use that rate."""
    from fednlp_bench import sampling

    sizes = np.array([0, 40, 0, 7, 0, 19])
    hits = np.zeros(6)
    for r in range(1, 3001):
        hits[sampling.sample("uniform", r, sizes, 2, sampling.round_rng(0, r))] += 1
    assert hits[1] / 3000 == pytest.approx(2 / 3, abs=0.03)
    rt = _runtime(sizes=sizes.tolist(), per_round=2, rounds=4, user_noise=1.5)
    rec = rt.summary()["user_level"]
    assert rec["sampling_rate"] == pytest.approx(2 / 3) and rec["sampled_from"] == 3
    assert rec["epsilon"] == pytest.approx(_dp_accounting_epsilon(1.5, 2 / 3, 4, 1e-5), rel=0.02)
    # continual setting: rounds where fewer clients hold data are composed at their own rate
    late = rt.summary(sizes_at=lambda r: sizes if r > 2 else np.array([0, 4, 0, 0, 0, 3]))["user_level"]
    assert late["sampling_rate"] == 1.0 and "rate_note" in late
    assert late["epsilon"] > rec["epsilon"]


def test_sampling_rate_is_read_from_the_recorded_cohorts():
    """A run's record composes the population each cohort was drawn from, as the engine recorded it:
    rounds 1-2 with 2 clients holding data (rate 1), rounds 3-4 with 3 (rate 2/3); a round that
    sampled nobody is not a step. Checked against dp-accounting's own composition."""
    import dp_accounting
    from dp_accounting.pld import pld_privacy_accountant

    from fednlp_bench import sampling

    sizes, early = np.array([0, 40, 0, 7, 0, 19]), np.array([0, 4, 0, 0, 0, 3])
    schedule = sampling.CohortSchedule("uniform", 2, seed=0)
    cohorts = [schedule.draw(r, early if r <= 2 else sizes) for r in range(1, 5)]
    assert [c.eligible for c in cohorts] == [2, 2, 3, 3]
    rt = _runtime(sizes=sizes.tolist(), per_round=2, rounds=5, user_noise=1.5)
    nobody = schedule.draw(5, np.zeros(6, dtype=np.int64))
    assert nobody.sampled == [] and nobody.eligible == 0
    rec = rt.summary(cohorts + [nobody])["user_level"]  # sizes_at is not needed: the cohorts say it
    g = dp_accounting.GaussianDpEvent(1.5)
    event = dp_accounting.ComposedDpEvent([
        dp_accounting.SelfComposedDpEvent(dp_accounting.PoissonSampledDpEvent(1.0, g), 2),
        dp_accounting.SelfComposedDpEvent(dp_accounting.PoissonSampledDpEvent(2 / 3, g), 2)])
    want = pld_privacy_accountant.PLDAccountant(value_discretization_interval=1e-4).compose(event).get_epsilon(1e-5)
    assert rec["epsilon"] == pytest.approx(want, rel=0.02)
    assert rec["accounted_rounds"] == 4 and rec["sampled_from"] == 2 and rec["sampling_rate"] == 1.0


def test_accounting_agrees_with_dp_accounting_called_directly():
    for sigma, q, steps in [(1.0, 0.1, 100), (0.7, 0.5, 5), (2.0, 0.01, 1000)]:
        for acc in ("rdp", "pld"):
            got = accounting.epsilon(sigma, q, steps, 1e-5, acc).epsilon
            assert got == pytest.approx(_dp_accounting_epsilon(sigma, q, steps, 1e-5, acc), rel=0.02)
    rdp = accounting.epsilon(1.0, 0.1, 100, 1e-5, "rdp")
    fixed = accounting.epsilon(1.0, 0.1, 100, 1e-5, "rdp", "fixed_size", population=100)
    assert fixed.epsilon > rdp.epsilon and fixed.neighbouring == "replace_one"
    none = accounting.epsilon(0.0, 0.1, 10, 1e-5)
    assert math.isinf(none.epsilon) and none.to_dict()["epsilon"] is None
    with pytest.raises(accounting.AccountingError):
        accounting.epsilon(1.0, 0.1, 10, 1e-5, "pld", "fixed_size", population=10)


def test_rounds_with_different_rates_compose():
    """Two phases (3 rounds at q = 0.2, 2 at q = 1) against dp-accounting's own composition."""
    import dp_accounting
    from dp_accounting.rdp import rdp_privacy_accountant

    got = accounting.epsilon_of_rounds(1.2, [(0.2, 10)] * 3 + [(1.0, 2)] * 2, 1e-5, "rdp")
    g = dp_accounting.GaussianDpEvent(1.2)
    event = dp_accounting.ComposedDpEvent([
        dp_accounting.SelfComposedDpEvent(dp_accounting.PoissonSampledDpEvent(0.2, g), 3),
        dp_accounting.SelfComposedDpEvent(dp_accounting.PoissonSampledDpEvent(1.0, g), 2)])
    want = rdp_privacy_accountant.RdpAccountant().compose(event).get_epsilon(1e-5)
    assert got.epsilon == pytest.approx(want, rel=1e-9) and got.sampling_rate == 1.0 and got.steps == 5


def test_single_gaussian_matches_the_analytic_gaussian_mechanism():
    from dp_accounting import get_epsilon_gaussian

    got = accounting.epsilon(1.5, 1.0, 1, 1e-5, "pld").epsilon
    assert got == pytest.approx(get_epsilon_gaussian(1.5, 1e-5), rel=0.01)


def test_noise_for_epsilon_meets_the_target():
    sigma = accounting.noise_for_epsilon(4.0, 0.05, 200, 1e-5, "rdp")
    assert _dp_accounting_epsilon(sigma, 0.05, 200, 1e-5, "rdp") <= 4.0
    assert _dp_accounting_epsilon(sigma * 0.98, 0.05, 200, 1e-5, "rdp") > 4.0


@pytest.mark.parametrize("override, message", [
    ("privacy.user_clip=0", "user_clip"),
    ("privacy.accountant=moments", "accountant"),
    ("privacy.per_sample_method=opacus", "per_sample_method"),
    ("privacy.clip_quantile=1.5", "clip_quantile"),
    ("privacy.adaptive_clip=true", "user_level"),
    ("privacy.sample_noise=-1", "sample_noise"),
])
def test_privacy_config_is_validated(override, message):
    with pytest.raises(ConfigError, match=message):
        config.resolve("tc", "smoke", [override])


def test_privacy_config_rejects_conflicts():
    with pytest.raises(ConfigError, match="not both"):
        config.resolve("tc", "smoke", ["privacy.user_level=true", "privacy.user_noise=1.0",
                                       "privacy.user_target_epsilon=3"])
    with pytest.raises(ConfigError, match="centralized"):
        config.resolve("tc", "smoke", ["privacy.user_level=true", "algorithm.name=centralized"])
    cfg = config.resolve("tc", "smoke", ["privacy.sample_level=true", "privacy.sample_noise=0.7"])
    assert cfg.privacy.sample_level and cfg.to_dict()["privacy"]["sample_noise"] == 0.7


@pytest.mark.slow
def test_private_run_records_its_guarantee(tiny_overrides):
    from fednlp_bench.run import run

    overrides = tiny_overrides("fl.rounds=2", "threads=1", "privacy.user_level=true", "privacy.user_target_epsilon=20",
                               "privacy.sample_level=true", "privacy.sample_noise=0.5", "privacy.accountant=rdp",
                               "privacy.audit=true")
    rec, path = run(config.resolve("tc", "smoke", overrides))
    priv = json.loads(path.read_text())["privacy"]
    user, sample = priv["user_level"], priv["sample_level"]
    assert user["epsilon"] == pytest.approx(20, rel=0.01)
    assert user["delta"] == 1e-5 and sample["delta"] == 1e-5 and user["sampling"].startswith("poisson")
    assert user["epsilon"] == pytest.approx(
        _dp_accounting_epsilon(user["noise_multiplier"], 2 / 4, 2, 1e-5, "rdp"), rel=0.02)
    assert sample["epsilon"] == pytest.approx(_dp_accounting_epsilon(
        0.5, sample["worst_client_sampling_rate"], sample["worst_client_steps"], 1e-5, "rdp"), rel=0.02)
    # 64 rows over 4 clients of 16, batch 8, one local epoch: 2 Poisson steps at rate 8/16 per round taken
    assert sample["worst_client_sampling_rate"] == pytest.approx(8 / 16) and sample["worst_client_steps"] in (2, 4)
    assert "fixed-size" in user["sampling_note"] and user["epsilon_fixed_size"] > user["epsilon"]
    assert [r["round"] for r in user["per_round"]] == [1, 2]
    assert sample["epsilon"] > 0 and sample["method"] == "ghost" and 0 <= sample["clipped_fraction"] <= 1
    assert rec["metrics"]["fairness"]["n_clients"] == 4
    audit = rec["audit"]
    assert 0 <= audit["example"]["auc"] <= 1 and audit["example"]["n_nonmembers"] == 32
