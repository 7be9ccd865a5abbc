"""Leaderboard statistics against hand-computed examples and printed t tables."""
from __future__ import annotations

import math

import pytest

from fednlp_bench.leaderboard.stats import (
    compare,
    mean_ci,
    rounds_to_target,
    t_quantile,
    tie_aware_ranks,
    welch,
)

# Two-sided 95% critical values of Student's t, from a printed table (e.g. NIST/SEMATECH e-Handbook,
# table 1.3.6.7.2, column 0.975).
T_TABLE = {1: 12.706, 2: 4.303, 3: 3.182, 4: 2.776, 5: 2.571, 9: 2.262, 29: 2.045, 100: 1.984}


@pytest.mark.parametrize("df, expected", sorted(T_TABLE.items()))
def test_t_quantile_matches_the_printed_table(df, expected):
    assert t_quantile(df) == pytest.approx(expected, abs=6e-4)


def test_t_quantile_fractional_df_lies_between_neighbours():
    assert t_quantile(2) > t_quantile(2.5) > t_quantile(3)
    with pytest.raises(ValueError):
        t_quantile(0)


def test_mean_ci_by_hand():
    est = mean_ci([0.70, 0.80, 0.90])
    # mean 0.8; s = sqrt((0.01 + 0 + 0.01) / 2) = 0.1; half = t(2) * 0.1 / sqrt(3)
    assert est.mean == pytest.approx(0.8) and est.std == pytest.approx(0.1) and est.n == 3
    assert est.half == pytest.approx(4.302653 * 0.1 / math.sqrt(3), rel=1e-6)
    one = mean_ci([0.5])
    assert (one.mean, one.half, one.n) == (0.5, None, 1)
    assert mean_ci([]).mean is None
    # odd size, uneven values: [1, 2, 4, 8, 16] mean 6.2, s^2 = (27.04+17.64+4.84+3.24+96.04)/4 = 37.2
    five = mean_ci([1, 2, 4, 8, 16])
    assert five.mean == pytest.approx(6.2) and five.std == pytest.approx(math.sqrt(37.2))
    assert five.half == pytest.approx(2.776445 * math.sqrt(37.2) / math.sqrt(5), rel=1e-6)


def test_paired_difference_by_hand():
    a = {0: 0.70, 1: 0.80, 2: 0.90}
    b = {0: 0.75, 1: 0.78, 2: 0.81}
    d = compare(a, b)  # d = [-0.05, 0.02, 0.09]: mean 0.02, s = 0.07
    assert d.method == "paired" and d.n == 3
    assert d.mean == pytest.approx(0.02)
    assert d.half == pytest.approx(4.302653 * 0.07 / math.sqrt(3), rel=1e-6)
    assert not d.significant
    # a consistent small difference is significant although the seed-to-seed spread is large
    a2 = {0: 0.80, 1: 0.90, 2: 0.70}
    b2 = {0: 0.70, 1: 0.81, 2: 0.60}  # d = [0.10, 0.09, 0.10]
    d2 = compare(a2, b2)
    s = math.sqrt(((0.1 - 0.29 / 3) ** 2 * 2 + (0.09 - 0.29 / 3) ** 2) / 2)
    assert d2.mean == pytest.approx(0.29 / 3) and d2.half == pytest.approx(4.302653 * s / math.sqrt(3), rel=1e-5)
    assert d2.significant and d2.low > 0
    # unpaired, the same numbers would not be (the spread between seeds hides the difference)
    assert not welch(list(a2.values()), list(b2.values())).significant


def test_pairs_only_shared_seeds():
    a = {0: 0.5, 1: 0.6, 2: 0.7, 7: 0.1}
    b = {0: 0.4, 1: 0.5, 2: 0.6, 9: 0.9}
    d = compare(a, b)
    assert d.method == "paired" and d.n == 3 and d.mean == pytest.approx(0.1) and d.half == pytest.approx(0.0)
    assert d.significant  # identical differences on every shared seed


def test_welch_by_hand():
    # a = [1, 2, 3]: var 1; b = [2, 4]: var 2. diff -1; se^2 = 1/3 + 1 = 4/3;
    # df = (4/3)^2 / ((1/3)^2 / 2 + 1^2 / 1) = 32/19
    d = welch([1.0, 2.0, 3.0], [2.0, 4.0])
    assert d.mean == pytest.approx(-1.0)
    assert d.half == pytest.approx(t_quantile(32 / 19) * math.sqrt(4 / 3), rel=1e-9)
    assert t_quantile(32 / 19) == pytest.approx(5.1762316, rel=1e-6)  # scipy.stats.t.ppf(0.975, 32/19)
    via_compare = compare({0: 1.0, 1: 2.0, 2: 3.0}, {5: 2.0, 6: 4.0})
    assert via_compare.method == "welch" and via_compare.half == pytest.approx(d.half)


def test_one_seed_gives_no_interval():
    d = compare({0: 0.9}, {0: 0.5, 1: 0.6})
    assert d.method == "means" and d.half is None and not d.significant
    assert d.mean == pytest.approx(0.9 - 0.55)
    assert compare({}, {0: 1.0}) is None


def test_tie_aware_ranks_by_hand():
    a = {0: 0.90, 1: 0.91, 2: 0.92}
    b = {0: 0.89, 1: 0.915, 2: 0.92}  # within noise of a
    c = {0: 0.80, 1: 0.81, 2: 0.82}  # 0.1 below a and about 0.1 below b on every seed
    d = {0: 0.95}  # one seed: cannot be told apart from anything
    assert tie_aware_ranks([a, b, c, d]) == [1, 1, 3, 1]
    # equal rows share rank 1; a row beaten by one significantly better row has rank 2
    e = {0: 0.5, 1: 0.6, 2: 0.7}
    f = {0: 0.4, 1: 0.5, 2: 0.6}
    assert tie_aware_ranks([e, dict(e), f]) == [1, 1, 3]
    assert tie_aware_ranks([e, f]) == [1, 2]
    assert tie_aware_ranks([{0: 0.1}, {0: 0.9}]) == [1, 1]  # single seeds never separate


def test_rounds_to_target():
    curve = [(3, 0.85), (1, 0.50), (2, 0.80), (4, 0.84)]
    assert rounds_to_target(curve, 0.81) == 3
    assert rounds_to_target(curve, 0.80) == 2
    assert rounds_to_target(curve, 0.86) is None
    assert rounds_to_target([(1, 0.72)], 0.9 * 0.8) == 1  # 0.7200000000000001: float rounding is not a miss
    assert rounds_to_target([], 0.1) is None
