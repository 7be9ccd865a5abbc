"""User-level DP-FedAvg (clip, noise, adaptive clip), accounting, config and an end-to-end run."""
from __future__ import annotations

import json
import math

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


def test_adaptive_noise_split_follows_andrew_et_al():
    p = UserDPParams(clip=1.0, noise_multiplier=1.0, expected_clients=20, adaptive=True, count_stddev=1.0)
    assert p.delta_noise_multiplier == pytest.approx((1 - 0.25) ** -0.5)
    with pytest.raises(ValueError, match="too small"):
        UserLevelDP(UserDPParams(clip=1.0, noise_multiplier=1.0, expected_clients=4, adaptive=True), seed=0)


def test_accounting_is_consistent():
    rdp = accounting.epsilon(1.0, 0.1, 100, 1e-5, "rdp")
    pld = accounting.epsilon(1.0, 0.1, 100, 1e-5, "pld")
    assert 0 < pld.epsilon < rdp.epsilon < 10  # PLD is tighter
    assert accounting.epsilon(2.0, 0.1, 100, 1e-5).epsilon < rdp.epsilon
    assert accounting.epsilon(1.0, 0.1, 200, 1e-5).epsilon > rdp.epsilon
    fixed = accounting.epsilon(1.0, 0.1, 100, 1e-5, "rdp", "fixed_size", population=100)
    assert fixed.epsilon > rdp.epsilon and fixed.neighbouring == "replace_one"
    none = accounting.epsilon(0.0, 0.1, 10, 1e-5)
    assert math.isinf(none.epsilon) and none.to_dict()["epsilon"] is None
    with pytest.raises(accounting.AccountingError):
        accounting.epsilon(1.0, 0.1, 10, 1e-5, "pld", "fixed_size", population=10)


def test_single_gaussian_matches_the_analytic_gaussian_mechanism():
    from dp_accounting import get_epsilon_gaussian

    got = accounting.epsilon(1.5, 1.0, 1, 1e-5, "pld").epsilon
    assert got == pytest.approx(get_epsilon_gaussian(1.5, 1e-5), rel=0.01)


def test_noise_for_epsilon_meets_the_target():
    sigma = accounting.noise_for_epsilon(4.0, 0.05, 200, 1e-5, "rdp")
    assert accounting.epsilon(sigma, 0.05, 200, 1e-5, "rdp").epsilon <= 4.0
    assert accounting.epsilon(sigma * 0.98, 0.05, 200, 1e-5, "rdp").epsilon > 4.0


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
    assert user["delta"] == 0.25 and user["sampling"].startswith("poisson")
    assert "fixed-size" in user["sampling_note"] and user["epsilon_fixed_size"] > user["epsilon"]
    assert [r["round"] for r in user["per_round"]] == [1, 2]
    assert sample["epsilon"] > 0 and sample["method"] == "ghost" and 0 <= sample["clipped_fraction"] <= 1
    assert rec["metrics"]["fairness"]["n_clients"] == 4
    audit = rec["audit"]
    assert 0 <= audit["example"]["auc"] <= 1 and audit["example"]["n_nonmembers"] == 32
