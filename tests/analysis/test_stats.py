"""Statistics a reviewer accepts: Holm-corrected p-values, 95 % intervals of paired differences."""

from __future__ import annotations

import math
import statistics

import pytest

from gdsoftmax.analysis.stats import holm, linear_trend, paired_comparison, unpaired_comparison, verdict


def test_holm_by_hand():
    # sorted 0.005, 0.01, 0.03, 0.04 -> x4, x3, x2, x1 = 0.02, 0.03, 0.06, 0.04 -> made monotone: 0.06
    assert holm([0.01, 0.04, 0.03, 0.005]) == pytest.approx([0.03, 0.06, 0.06, 0.02])
    assert holm([0.5]) == [0.5]
    assert holm([0.4, 0.5]) == pytest.approx([0.8, 0.8])  # capped at 1, monotone
    adjusted = holm([0.02, math.nan, 0.01])
    assert math.isnan(adjusted[1])  # not a test, not counted in the family
    assert adjusted[0] == pytest.approx(0.02)
    assert adjusted[2] == pytest.approx(0.02)


def test_holm_never_lowers_a_p_value():
    p = [0.001, 0.2, 0.049, 0.03, 0.7, 0.01]
    assert all(a >= b for a, b in zip(holm(p), p, strict=True))


def test_the_95_interval_of_a_paired_difference_by_hand():
    c = paired_comparison([3.0, 5.0, 7.0], [2.0, 3.0, 4.0])  # differences 1, 2, 3: mean 2, sd 1
    half = 4.302652729911275 / math.sqrt(3)  # t(0.975, 2)
    assert (c.ci_low, c.ci_high) == pytest.approx((2 - half, 2 + half))
    assert c.ci_low < 0 < c.difference  # the interval includes 0 ...
    assert c.p_value > 0.05  # ... exactly when the t-test is not significant


def test_a_verdict_follows_the_corrected_p_value():
    c = paired_comparison([1.1, 1.2, 1.3, 1.25], [1.0, 1.0, 1.1, 1.05])
    assert c.p_value < 0.05
    assert verdict(c, +1) == "confirmed"
    assert verdict(c, +1, adjusted_p=0.2) == "inconclusive"
    assert verdict(c, -1, adjusted_p=0.01) == "refuted"


def test_a_linear_trend_by_hand():
    # x = 0, 1, 2 and y = 1, 3, 2: slope Sxy / Sxx = 1 / 2; residuals -0.5, 1, -0.5, so s^2 = 1.5 / 1 and
    # se = sqrt(1.5 / 2); with one degree of freedom t is Cauchy: p = 1 - (2 / pi) atan(0.5 / se) = 2 / 3
    trend = linear_trend([0, 1, 2], [1, 3, 2])
    se = math.sqrt(1.5 / 2)
    assert trend.difference == pytest.approx(0.5)
    assert trend.p_value == pytest.approx(1 - 2 / math.pi * math.atan(0.5 / se))
    assert trend.p_value == pytest.approx(2 / 3)
    assert trend.ci_low == pytest.approx(0.5 - 12.7062047 * se, rel=1e-6)
    assert trend.effect_size == pytest.approx(0.5)  # r = Sxy / sqrt(Sxx Syy) = 1 / sqrt(2 * 2)
    assert verdict(trend, -1) == "inconclusive"
    assert math.isnan(linear_trend([1, 1, 1], [1, 2, 3]).p_value)  # no spread in x: no slope
    with pytest.raises(ValueError, match="as many x as y"):
        linear_trend([1, 2], [1])


def test_a_welch_comparison_by_hand():
    from scipy import stats

    a, b = [5.0, 6.0, 7.0, 9.0], [1.0, 2.0, 3.0]
    # means 6.75 and 2; variances of the means 0.7292 and 0.3333; Welch-Satterthwaite dof
    # 1.0625^2 / (0.7292^2 / 3 + 0.3333^2 / 2) = 4.850
    va, vb = (35 / 12) / 4, 1 / 3
    dof = (va + vb) ** 2 / (va**2 / 3 + vb**2 / 2)
    assert dof == pytest.approx(4.850, abs=1e-3)
    half = stats.t.ppf(0.975, dof) * math.sqrt(va + vb)  # the Welch interval from the formula
    c = unpaired_comparison(a, b)
    assert c.difference == pytest.approx(4.75)
    assert (c.ci_low, c.ci_high) == pytest.approx((4.75 - half, 4.75 + half), rel=1e-9)
    assert c.p_value < 0.01
    assert c.effect_size == pytest.approx(4.75 / math.sqrt((35 / 12 + 1) / 2))
    same = unpaired_comparison([2.0, 2.0], [1.0, 1.0])  # no spread: the difference is exact
    assert (same.difference, same.p_value, same.ci_low, same.ci_high) == (1.0, 0.0, 1.0, 1.0)
    assert math.isnan(unpaired_comparison([1.0], [2.0, 3.0]).p_value)


@pytest.mark.parametrize(("treatment", "baseline", "why"), [
    ([0.95, 0.96], [0.94, 0.95], "fewer than 3 seeds"),  # two seeds: no test, however large d_z looks
    ([0.95, 0.96, 0.97], [0.94, 0.95, 0.96], "the same difference at every seed"),  # steps of 1/N agree exactly
    ([0.9], [0.8], "fewer than 3 seeds"),
])
def test_a_paired_test_without_spread_or_seeds_decides_nothing(treatment, baseline, why):
    c = paired_comparison(treatment, baseline)
    assert c.undecided == why
    assert math.isnan(c.p_value)
    assert math.isnan(c.effect_size)
    assert c.difference == pytest.approx(statistics.fmean(treatment) - statistics.fmean(baseline))
    assert verdict(c, +1) == "inconclusive"
    assert math.isnan(holm([c.p_value, 0.01])[0])  # left out of the family, not p = 0


def test_a_paired_test_with_spread_is_decided():
    assert paired_comparison([0.95, 0.97, 0.96], [0.94, 0.95, 0.96]).undecided is None
