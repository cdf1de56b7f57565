"""Seeded statistics: mean +- std over seeds, paired tests against a baseline, claim verdicts.

Runs that differ only in beta share their seeds (same initialisation, same data order), so a
comparison with beta = 1 is paired by seed: a paired t-test on the per-seed differences, and the
effect size d_z = mean(diff) / std(diff).

>>> summary = paired_comparison([0.97, 0.98, 0.975], [0.96, 0.97, 0.962])
>>> round(summary.difference, 4), summary.n
(0.011, 3)
"""

from __future__ import annotations

import math
import statistics
from dataclasses import dataclass

__all__ = ["MIN_PAIRS", "Comparison", "format_mean_std", "format_p", "holm", "import_tests", "linear_trend",
           "mean_std", "paired_comparison", "unpaired_comparison", "verdict"]

SIGNIFICANCE = 0.05
MIN_PAIRS = 3  # a paired test on fewer seeds decides nothing


def mean_std(values) -> tuple[float, float]:
    """Mean and sample standard deviation (0 for a single value)."""
    values = [float(v) for v in values]
    if not values:
        return math.nan, math.nan
    return statistics.fmean(values), statistics.stdev(values) if len(values) > 1 else 0.0


def format_mean_std(values, scale: float = 1.0, digits: int = 2) -> str:
    mean, std = mean_std(values)
    return f"{scale * mean:.{digits}f} ± {scale * std:.{digits}f}"


@dataclass
class Comparison:
    """treatment - baseline, paired by seed."""

    n: int
    difference: float  # mean of per-seed differences
    effect_size: float  # d_z; NaN when the test is undecided
    p_value: float  # two-sided paired t-test; NaN when it cannot be computed
    ci_low: float = math.nan  # 95 % t-interval of the mean difference
    ci_high: float = math.nan

    @property
    def undecided(self) -> str | None:
        """Why no test was made (too few seeds, or no spread in the differences), or None."""
        if not math.isnan(self.p_value) or self.n == 0:
            return None
        return f"fewer than {MIN_PAIRS} seeds" if self.n < MIN_PAIRS else "the same difference at every seed"

    @property
    def significant(self) -> bool:
        return not math.isnan(self.p_value) and self.p_value < SIGNIFICANCE


def import_tests() -> None:
    """Import the tests' scipy.stats now rather than at the first comparison (1 s: kept out of start-up); for a
    caller with time to spare, such as a report waiting on its background fits."""
    from scipy import stats  # noqa: F401


def paired_comparison(treatment, baseline) -> Comparison:
    """Compare two lists of per-seed values (same seed order).

    A paired t-test decides nothing with fewer than :data:`MIN_PAIRS` seeds, or when every seed's
    difference is the same (accuracies move in steps of 1/N, so two seeds can agree exactly): its
    p-value would be 0 or meaningless. Then ``p_value`` and ``effect_size`` are NaN, the comparison
    is *undecided* (:attr:`Comparison.undecided`), and Holm and :func:`verdict` leave it out.

    >>> paired_comparison([0.9, 0.8], [0.8, 0.7]).undecided
    'fewer than 3 seeds'
    >>> paired_comparison([0.9, 0.8, 0.7], [0.8, 0.7, 0.6]).undecided
    'the same difference at every seed'
    >>> paired_comparison([0.9, float("nan"), 0.7, 0.8], [0.8, 0.7, 0.6, 0.75]).n  # a seed without a value drops out
    3
    """
    from scipy import stats

    if len(treatment) != len(baseline):
        raise ValueError(f"paired comparison needs equal numbers of seeds, got {len(treatment)} and {len(baseline)}")
    # a seed whose value is missing (NaN, e.g. a quantity a run could not measure) leaves the pairing
    pairs = [(float(a), float(b)) for a, b in zip(treatment, baseline, strict=True)
             if math.isfinite(float(a)) and math.isfinite(float(b))]
    treatment, baseline = [a for a, _ in pairs], [b for _, b in pairs]
    diffs = [a - b for a, b in pairs]
    n = len(diffs)
    if n == 0:
        return Comparison(0, math.nan, math.nan, math.nan)
    mean = statistics.fmean(diffs)
    if n < MIN_PAIRS:
        return Comparison(n, mean, math.nan, math.nan)
    spread = statistics.stdev(diffs)
    if spread <= 1e-12 * max(1.0, abs(mean)):  # zero, up to the rounding of the differences
        return Comparison(n, mean, math.nan, math.nan)
    half_width = float(stats.t.ppf(0.975, n - 1)) * spread / math.sqrt(n)
    return Comparison(n, mean, mean / spread, float(stats.ttest_rel(treatment, baseline).pvalue),
                      mean - half_width, mean + half_width)


def format_p(p: float, digits: int = 3) -> str:
    """A p-value for a table; an undecided test (NaN) reads "undecided", never a number.

    >>> format_p(0.01234), format_p(float("nan"))
    ('0.0123', 'undecided')
    """
    return "undecided" if math.isnan(p) else f"{p:.{digits}g}"


def unpaired_comparison(treatment, baseline) -> Comparison:
    """mean(treatment) - mean(baseline) for two independent samples: Welch's t-test and its 95 %
    interval (Welch-Satterthwaite degrees of freedom); ``effect_size`` is the difference over the
    pooled standard deviation.

    >>> c = unpaired_comparison([5.0, 6.0, 7.0], [1.0, 2.0, 3.0])
    >>> round(c.difference, 2), round(c.ci_low, 2), c.p_value < 0.05
    (4.0, 1.73, True)
    """
    from scipy import stats

    a, b = [float(v) for v in treatment], [float(v) for v in baseline]
    n = min(len(a), len(b))
    if n < 2:
        return Comparison(n, math.nan, math.nan, math.nan)
    difference = statistics.fmean(a) - statistics.fmean(b)
    pooled = math.sqrt((statistics.variance(a) + statistics.variance(b)) / 2)
    if pooled == 0:  # no spread in either sample: the t-test is undefined, the difference is exact
        effect = 0.0 if difference == 0 else math.copysign(math.inf, difference)
        return Comparison(n, difference, effect, 1.0 if difference == 0 else 0.0, difference, difference)
    test = stats.ttest_ind(a, b, equal_var=False)
    interval = test.confidence_interval(0.95)  # Welch-Satterthwaite degrees of freedom
    return Comparison(n, difference, difference / pooled, float(test.pvalue), float(interval.low),
                      float(interval.high))


def linear_trend(x, y) -> Comparison:
    """The least-squares slope of ``y`` on ``x`` as a Comparison: ``difference`` is the slope with its
    95 % t-interval, ``effect_size`` Pearson's r, ``p_value`` the two-sided test of a zero slope.

    >>> trend = linear_trend([-1, 0, 1, 2], [4.1, 3.0, 2.1, 0.9])
    >>> round(trend.difference, 2), trend.p_value < 0.01
    (-1.05, True)
    """
    from scipy import stats

    x, y = [float(v) for v in x], [float(v) for v in y]
    if len(x) != len(y):
        raise ValueError(f"a trend needs as many x as y values, got {len(x)} and {len(y)}")
    n = len(x)
    if n < 3 or len(set(x)) < 2:
        return Comparison(n, math.nan, math.nan, math.nan)
    fit = stats.linregress(x, y)
    half_width = float(stats.t.ppf(0.975, n - 2)) * fit.stderr
    return Comparison(n, float(fit.slope), float(fit.rvalue), float(fit.pvalue), fit.slope - half_width,
                      fit.slope + half_width)


def holm(p_values: list[float]) -> list[float]:
    """Holm-Bonferroni adjusted p-values for a family of tests (NaN stays NaN and is not counted):
    a test is significant at level a after the correction when its adjusted p is below a, which
    keeps the chance of any false positive in the family below a.

    >>> [round(p, 3) for p in holm([0.01, 0.04, 0.03, 0.005])]
    [0.03, 0.06, 0.06, 0.02]
    """
    tested = sorted((p, i) for i, p in enumerate(p_values) if not math.isnan(p))
    adjusted = [math.nan] * len(p_values)
    running = 0.0
    for rank, (p, i) in enumerate(tested):
        running = max(running, min(1.0, (len(tested) - rank) * p))
        adjusted[i] = running
    return adjusted


def verdict(comparison: Comparison, expected_sign: int, adjusted_p: float | None = None) -> str:
    """'confirmed' if the effect has the claimed sign and is significant, 'refuted' if significant
    the other way, else 'inconclusive'. With ``adjusted_p`` (from :func:`holm`) significance is that
    of the corrected test."""
    p = comparison.p_value if adjusted_p is None else adjusted_p
    if math.isnan(p) or p >= SIGNIFICANCE:
        return "inconclusive"
    return "confirmed" if math.copysign(1, comparison.difference) == expected_sign else "refuted"
