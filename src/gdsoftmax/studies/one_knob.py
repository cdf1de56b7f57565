"""Can a change of τ at β = 1 stand in for a change of β? The test of ``tau-beta-complementary`` that can tell one
knob from two (issue 40).

The claim is that τ and β act on different things, so the loss should keep both. If they were one knob, some τ at
β = 1 would reproduce what a β ≠ 1 does at τ = 1 on every quantity at once. So each β ≠ 1 cell at τ = 1 is
compared with each τ ≠ 1 cell at β = 1, paired by seed, on test accuracy, confidence − accuracy and the logit
margin; one Holm family holds every such comparison. For one β cell:

* **confirmed** (τ cannot stand in) when every τ differs from it on at least one quantity (corrected p < 0.05);
* **refuted** (one knob suffices, on this grid) when some τ is equivalent to it on all three by two one-sided tests
  against the margins :data:`MARGINS` (0.5 accuracy points, 1 point of confidence − accuracy, 10 % of the β cell's
  margin), Bonferroni over the family;
* otherwise **inconclusive**.

The τ grid is finite: a τ between two grid points might match where none on the grid does, so a confirmation
holds for the τ values run, not for every τ.
"""

from __future__ import annotations

from gdsoftmax.loss.schedules import describe_beta
from gdsoftmax.studies import factorial as fx
from gdsoftmax.studies.evidence import equivalence_p
from gdsoftmax.studies.markdown import markdown_table
from gdsoftmax.studies.verdicts import Verdict

__all__ = ["MARGINS", "QUANTITIES", "one_knob"]

QUANTITIES = (("test accuracy", "accuracy (points)", 100), ("overconfidence", "confidence − accuracy (points)", 100),
              ("margin", "logit margin", 1))
# equivalence margins in printed units; the logit margin's is relative (None: 10 % of the β cell's mean)
MARGINS = {"test accuracy": 0.5, "overconfidence": 1.0, "margin": None}
FAMILY = "one knob: each β ≠ 1 at τ = 1 against each τ ≠ 1 at β = 1, on accuracy, confidence − accuracy and margin"


def _equivalent(effect: fx.Effect, metric: str, size: int) -> bool:
    margin = MARGINS[metric] if MARGINS[metric] is not None else 0.1 * abs(effect.treatment)
    c = effect.comparison
    return min(1.0, equivalence_p(c.difference, c.ci_low, c.ci_high, c.n, margin) * size) < 0.05


def one_knob(groups: dict, taus: list[float], betas: list[float], meta: tuple) -> tuple[list[str], list[Verdict]]:
    """The section and the ledger rows of the one-knob test; ``groups`` maps (τ, β) to runs (factorial.by_level)."""
    cells = [b for b in betas if b != 1.0 and (1.0, b) in groups]
    others = [t for t in taus if t != 1.0 and (t, 1.0) in groups]
    effects = fx.corrected([fx.paired_effect(f"{describe_beta(b)} (τ = 1) − τ = {t:g} (β = 1): {name}", groups[1.0, b],
                                             groups[t, 1.0], metric, scale=scale)
                            for b in cells for t in others for metric, name, scale in QUANTITIES])
    size = fx.family_size(effects)
    rows, verdicts, at = [], [], iter(effects)
    for b in cells:
        outcome, closest = "confirmed", None
        for t in others:
            mine = [next(at) for _ in QUANTITIES]
            differs = any(e.adjusted < 0.05 for e in mine)
            same = all(_equivalent(e, m, size) for e, (m, _, _) in zip(mine, QUANTITIES, strict=True))
            rows.append([describe_beta(b), f"τ = {t:g}", *(e.cells()[3] for e in mine),
                         "differs" if differs else "equivalent on all three" if same else "not decided"])
            if same:
                outcome = "refuted"
            elif not differs and outcome == "confirmed":
                outcome = "inconclusive"
            # the row the ledger prints: the τ that comes closest (fewest quantities apart, then smallest |d_z|)
            key = (sum(e.adjusted < 0.05 for e in mine), max(abs(e.comparison.effect_size) for e in mine))
            if closest is None or key < closest[0]:
                closest = (key, max(mine, key=lambda e: abs(e.comparison.effect_size)))
        e, c = closest[1], closest[1].comparison
        verdicts.append(Verdict("tau-beta-complementary", *meta, e.label, c.n, e.treatment, e.baseline,
                                c.difference, c.ci_low, c.ci_high, c.effect_size, c.p_value, e.adjusted, FAMILY,
                                size, outcome))
    lines = ["## One knob or two?", "",
             "Each β ≠ 1 at τ = 1 against each τ ≠ 1 at β = 1, paired by seed: Δ = the β cell − the τ cell, with "
             "its 95 % interval, on all three quantities. A τ *stands in* for β only if it is equivalent on all "
             f"three (two one-sided tests against ±{MARGINS['test accuracy']:g} accuracy points, "
             f"±{MARGINS['overconfidence']:g} point of confidence − accuracy and ±10 % of the β cell's margin, "
             "Bonferroni over the family); it *differs* when one quantity has a Holm-corrected p < 0.05.", "",
             markdown_table(["β cell", "against", *(name for _, name, _ in QUANTITIES), "τ as β"], rows), "",
             f"Holm family: {FAMILY} (k = {size}). The ledger's row for each β is the comparison with the τ that "
             "came closest. The τ grid is finite: a confirmation holds for the τ values run.", ""]
    return lines, verdicts

