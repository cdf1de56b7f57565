"""The paper's registered claims (:mod:`gdsoftmax.analysis.paper_claims`) tested on one report's runs.

Each comparison is a setting against β = 1 on one metric, paired by seed. **One Holm family per
metric and report**: every setting compared with β = 1 on that metric in the report, so the same
comparison gets the same corrected p in every table of a report, whichever claim reads it. The trend
claims (slopes over log10 β) form one more family: the report's trend tests.

A verdict is "confirmed" only when the corrected test has the claimed sign, "refuted" when it has
the opposite sign, otherwise "inconclusive" ("undecided" with fewer than three seeds).

Everything here reads :class:`~gdsoftmax.studies.run_table.RunRow` values only, so the verdicts of a
committed report are recomputed from its ``runs.csv`` (:func:`verdicts_from_runs_csv`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

from gdsoftmax.analysis.paper_claims import Claim, claims_with_tests
from gdsoftmax.analysis.stats import Comparison, holm, linear_trend, mean_std, paired_comparison, verdict
from gdsoftmax.studies.run_table import RunRow, read_runs_csv
from gdsoftmax.studies.verdicts import Verdict

__all__ = ["Families", "claims_verdicts", "group_rows", "verdicts_from_runs_csv"]


@dataclass(frozen=True)
class Tested:
    """One setting against β = 1 on one metric: the paired test and its Holm-corrected p."""

    comparison: Comparison
    adjusted: float
    treatment: float  # mean over the paired seeds
    baseline: float


class Families:
    """The Holm families of one report, made once per (metric, baseline metric) and shared by every
    table and claim that reads them."""

    def __init__(self, groups: dict[str, list[RunRow]], baseline: str | None):
        self.groups, self.baseline = groups, baseline
        self._made: dict[tuple[str, str], dict[str, Tested]] = {}

    def family(self, metric: str, baseline_metric: str | None = None) -> dict[str, Tested]:
        """setting name -> its test against β = 1 on ``metric`` (β = 1's ``baseline_metric``)."""
        key = (metric, baseline_metric or metric)
        if key not in self._made:
            self._made[key] = self._make(*key)
        return self._made[key]

    def _make(self, metric: str, baseline_metric: str) -> dict[str, Tested]:
        if self.baseline is None:
            return {}
        base = {r.seed: r for r in self.groups[self.baseline]}
        tests = {}
        for name, group in self.groups.items():
            paired = [r for r in group
                      if r.seed in base and r.metrics.finite(metric) and base[r.seed].metrics.finite(baseline_metric)]
            if name == self.baseline or not paired:
                continue
            treated = [r.metrics[metric] for r in paired]
            reference = [base[r.seed].metrics[baseline_metric] for r in paired]
            tests[name] = (paired_comparison(treated, reference), mean_std(treated)[0], mean_std(reference)[0])
        adjusted = holm([c.p_value for c, _, _ in tests.values()])
        return {name: Tested(c, p, t, b) for (name, (c, t, b)), p in zip(tests.items(), adjusted, strict=True)}

    def size(self, metric: str, baseline_metric: str | None = None) -> int:
        """How many tests the family's correction counts (undecided ones are not counted)."""
        return sum(not math.isnan(t.comparison.p_value) for t in self.family(metric, baseline_metric).values())

    def note(self) -> str:
        """The sentence a report prints under every table with a corrected p: which families it used."""
        made = [f"{_family_name(m, b)} (k = {self.size(m, b)})" for m, b in self._made]
        return ("Holm families (one per metric in this report: every setting compared with β = 1 on it): "
                + "; ".join(made) + ".") if made else ""


def _family_name(metric: str, baseline_metric: str) -> str:
    return f"{metric} vs β = 1" if metric == baseline_metric else f"{metric} vs β = 1's {baseline_metric}"


def _verdict_of(comparison: Comparison, direction: int, adjusted: float) -> str:
    return f"undecided: {comparison.undecided}" if comparison.undecided else verdict(comparison, direction, adjusted)


def claims_verdicts(groups: dict[str, list[RunRow]], families: Families, section: str,
                    applies: set[str] | None = None) -> list[Verdict]:
    """Every registered claim tested on these groups (those ``applies`` allows): a verdict per setting
    the claim covers, then the trend claims as one family."""
    first = next(iter(groups.values()))[0]
    meta = (section, first.dataset, first.model, first.epochs)
    verdicts = []
    for claim in claims_with_tests(applies):
        if claim.test.applies != "trend":
            verdicts += _claim_verdicts(claim, groups, families, meta)
    if applies is None or "trend" in applies:
        verdicts += _trend_verdicts(groups, meta)
    return verdicts


def _claim_verdicts(claim: Claim, groups, families: Families, meta) -> list[Verdict]:
    test = claim.test
    family = families.family(test.metric, test.baseline_metric)
    rows = []
    for name, group in groups.items():
        if name not in family or not test.covers(group[0].constant_beta, group[0].is_warmup):
            continue
        t, c, s = family[name], family[name].comparison, test.scale
        rows.append(Verdict(claim.id, *meta, group[0].label, c.n, s * t.treatment, s * t.baseline,
                            s * c.difference, s * c.ci_low, s * c.ci_high, c.effect_size, c.p_value, t.adjusted,
                            _family_name(test.metric, test.baseline_metric),
                            families.size(test.metric, test.baseline_metric),
                            _verdict_of(c, test.direction, t.adjusted)))
    return rows


def _trend_verdicts(groups: dict[str, list[RunRow]], meta) -> list[Verdict]:
    """One test per trend claim, the slope of a per-run value on log10 β over every constant-β run,
    Holm-corrected over the report's trend tests."""
    runs = [r for g in groups.values() for r in g if r.constant_beta is not None]
    claims = [c for c in claims_with_tests({"trend"}) if all(c.test.metric in r.metrics for r in runs)]
    if len({r.constant_beta for r in runs}) < 3 or not claims:
        return []
    x = [math.log10(r.constant_beta) for r in runs]
    trends = [linear_trend(x, [c.test.scale * r.metrics[c.test.metric] for r in runs]) for c in claims]
    adjusted = holm([t.p_value for t in trends])
    family = "the report's trend tests (slopes over log10 β)"
    return [Verdict(c.id, *meta, f"slope per decade of β, {len(runs)} runs", t.n, math.nan, math.nan, t.difference,
                    t.ci_low, t.ci_high, t.effect_size, t.p_value, p, family, len(trends),
                    verdict(t, c.test.direction, p))
            for c, t, p in zip(claims, trends, adjusted, strict=True)]


def group_rows(rows: list[RunRow]) -> tuple[dict[str, list[RunRow]], str | None]:
    """Rows by their group, in the order given, and the name of the β = 1 group (None if absent)."""
    groups: dict[str, list[RunRow]] = {}
    for row in rows:
        groups.setdefault(row.group, []).append(row)
    baseline = next((name for name, g in groups.items() if g[0].constant_beta == 1.0), None)
    return groups, baseline


def verdicts_from_runs_csv(path: str | Path, section: str = "claims",
                           applies: set[str] | None = None) -> list[Verdict]:
    """A report's claims table recomputed from its ``runs.csv`` alone."""
    groups, baseline = group_rows(read_runs_csv(path))
    return claims_verdicts(groups, Families(groups, baseline), section, applies)
