"""The statistics of a study that crosses β (or a loss) with one other factor: momentum, τ, width.

Every comparison pairs two settings by seed (:func:`paired_effect`); a study gathers the comparisons of
one question into a list and corrects them together with Holm (:func:`corrected`); the rows the
claims ledger reads are made from those corrected effects (:func:`claim_rows`). Everything here reads
:class:`~gdsoftmax.studies.run_table.RunRow` metrics only, so a study's verdicts are recomputed from its
``runs.csv``.

>>> from gdsoftmax.studies.run_table import RunRow
>>> from gdsoftmax.analysis.run_metrics import RunMetrics
>>> rows = [RunRow(f"b{b}_s{s}", f"beta={b}", f"β = {b}", b, False, s,
...                RunMetrics(test_accuracy=0.9 - 0.01 * b + 0.001 * s)) for b in (1.0, 2.0) for s in range(3)]
>>> effect = paired_effect("β = 2 vs β = 1", rows[3:], rows[:3], "test accuracy", scale=100)
>>> round(effect.comparison.difference, 6)
-1.0
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, replace

from gdsoftmax.analysis.stats import Comparison, format_p, holm, mean_std, paired_comparison, verdict
from gdsoftmax.studies.markdown import markdown_table
from gdsoftmax.studies.run_table import RunRow
from gdsoftmax.studies.verdicts import Verdict

__all__ = ["Effect", "by_level", "claim_rows", "corrected", "effects_table", "family_size", "level_value", "mean_cell",
           "paired_effect", "paired_values", "regime_line"]


@dataclass(frozen=True)
class Effect:
    """One comparison (treatment − baseline, paired by seed), with its Holm-corrected p once corrected."""

    label: str
    comparison: Comparison
    treatment: float  # mean over the paired seeds, scaled
    baseline: float
    adjusted: float = math.nan

    def cells(self, digits: int = 3) -> list[str]:
        c = self.comparison
        delta = (f"{c.difference:+.{digits}g}" if math.isnan(c.ci_low)
                 else f"{c.difference:+.{digits}g} [{c.ci_low:+.{digits}g}, {c.ci_high:+.{digits}g}]")
        star = " *" if self.adjusted < 0.05 else ""
        return [self.label, _number(self.treatment, digits), _number(self.baseline, digits), delta + star,
                "—" if math.isnan(c.effect_size) else f"{c.effect_size:+.2f}", format_p(c.p_value),
                format_p(self.adjusted)]


def _number(value: float, digits: int) -> str:
    return "—" if math.isnan(value) else f"{value:.{digits}g}"


def level_value(row: RunRow, key: str):
    """The value of a swept config key in a run (parsed from runs.csv's JSON text)."""
    if key not in row.swept:
        raise ValueError(f"{key} is not swept in run {row.run}; swept: {', '.join(row.swept) or 'nothing'}; is this "
                         "the study's sweep?")
    return json.loads(row.swept[key])


def by_level(rows: list[RunRow], level_of) -> dict:
    """Rows grouped by ``(level_of(row), row.constant_beta)``, each group sorted by seed."""
    groups: dict = {}
    for row in rows:
        groups.setdefault((level_of(row), row.constant_beta), []).append(row)
    return {key: sorted(group, key=lambda r: r.seed) for key, group in groups.items()}


def _scaled(comparison: Comparison, scale: float) -> Comparison:
    return replace(comparison, difference=scale * comparison.difference, ci_low=scale * comparison.ci_low,
                   ci_high=scale * comparison.ci_high)


def paired_effect(label: str, treated: list[RunRow], reference: list[RunRow], metric: str, *,
                  scale: float = 1.0) -> Effect:
    """``metric`` of ``treated`` minus that of ``reference``, paired by seed (seeds in only one side are left out)."""
    return paired_values(label, {r.seed: r.metrics[metric] for r in treated},
                         {r.seed: r.metrics[metric] for r in reference}, scale=scale)


def paired_values(label: str, treated: dict[int, float], reference: dict[int, float], *,
                  scale: float = 1.0) -> Effect:
    """A value a study derives per seed (seed -> value) against another, paired by seed (in ``treated``'s order;
    seeds in only one side are left out)."""
    pairs = [(value, reference[seed]) for seed, value in treated.items() if seed in reference]
    a, b = [p[0] for p in pairs], [p[1] for p in pairs]
    return Effect(label, _scaled(paired_comparison(a, b), scale), scale * mean_std(a)[0], scale * mean_std(b)[0])


def corrected(effects: list[Effect]) -> list[Effect]:
    """The effects with their p-values Holm-corrected over the list (one family)."""
    adjusted = holm([e.comparison.p_value for e in effects])
    return [replace(e, adjusted=p) for e, p in zip(effects, adjusted, strict=True)]


def family_size(effects: list[Effect]) -> int:
    """How many tests a Holm correction over ``effects`` counts (undecided ones are not tests)."""
    return sum(not math.isnan(e.comparison.p_value) for e in effects)


def effects_table(effects: list[Effect], family: str, unit: str) -> list[str]:
    """A markdown table of corrected effects, with the sentence that names their Holm family."""
    return [markdown_table(["comparison", "treatment", "baseline", f"Δ {unit} [95 % CI]", "d_z", "p", "Holm p"],
                           [e.cells() for e in effects]), "",
            f"Holm family: {family} (k = {family_size(effects)}); "
            "* marks a corrected p < 0.05.", ""]


def claim_rows(claim: str, effects: list[tuple[Effect, int]], family: str, size: int,
               meta: tuple) -> list[Verdict]:
    """The ledger's rows for ``claim``: each (corrected effect, claimed sign of its Δ), from a Holm family
    of ``size`` tests. ``meta`` is (section, dataset, model, epochs)."""
    rows = []
    for effect, direction in effects:
        c = effect.comparison
        outcome = f"undecided: {c.undecided}" if c.undecided else verdict(c, direction, effect.adjusted)
        rows.append(Verdict(claim, *meta, effect.label, c.n, effect.treatment, effect.baseline, c.difference,
                            c.ci_low, c.ci_high, c.effect_size, c.p_value, effect.adjusted, family, size,
                            outcome))
    return rows


def mean_cell(group: list[RunRow], metric: str, scale: float = 1.0, digits: int = 2) -> str:
    mean, std = mean_std([r.metrics[metric] for r in group])
    return f"{scale * mean:.{digits}f} ± {scale * std:.{digits}f}"


def regime_line(group: list[RunRow]) -> str:
    """How far the β = 1 (or CE) runs got: training accuracy, test ECE and mean confidence − accuracy."""
    return (f"training accuracy {mean_cell(group, 'train accuracy', 100)} %, test ECE "
            f"{mean_cell(group, 'test ece', 100)} %, confidence − accuracy {mean_cell(group, 'overconfidence', 100)} "
            "points")
