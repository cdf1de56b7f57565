"""The verdict a report opens with: one to three sentences derived from its own paired tests.

Shared by ``gdsoftmax compare`` and the sweep report, so both say the same thing of the same tests. A
sentence never reads a test that found nothing as "the same": it says "not significant at n = k". MCE,
whose near-empty bins make it noisy, never leads a verdict.

>>> from gdsoftmax.analysis.stats import paired_comparison
>>> ece = (paired_comparison([0.05, 0.06, 0.04], [0.12, 0.13, 0.12]), 0.004)
>>> acc = (paired_comparison([0.90, 0.91, 0.90], [0.91, 0.90, 0.92]), 0.6)
>>> ts = (paired_comparison([0.05, 0.06, 0.04], [0.02, 0.03, 0.02]), 0.01)
>>> lines = verdict_lines([Setting("β = 5", 3, ece, acc, ts)], "β = 1", 0.023)
>>> lines[0].split("; ")  # doctest: +NORMALIZE_WHITESPACE
['β = 5 against β = 1 over 3 seeds: ECE −7.33 points [−8.77, −5.90], significant (Holm p = 0.004)',
 'accuracy −0.67 points [−4.46, +3.13], not significant at n = 3 (Holm p = 0.6).']
>>> lines[1].endswith("try temperature scaling first.")
True
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from gdsoftmax.analysis.stats import SIGNIFICANCE, Comparison, format_p

__all__ = ["Setting", "claims_verdict", "delta_text", "verdict_lines"]

Tested = tuple[Comparison, float]  # a paired test and its Holm-corrected p


@dataclass
class Setting:
    """One setting's tests against the reference: ECE, accuracy, and its raw ECE against the reference's
    ECE after temperature scaling (None where no validation split was there to fit it)."""

    label: str
    seeds: int
    ece: Tested
    accuracy: Tested
    versus_scaled: Tested | None = None


def _signed(value: float, digits: int) -> str:
    return f"{value:+.{digits}f}".replace("-", "−")


def delta_text(tested: Tested, scale: float = 100.0, unit: str = " points", digits: int = 2) -> str:
    """Δ with its 95 % interval and what the corrected test says, in words."""
    test, adjusted = tested
    if test.undecided:
        return f"{_signed(scale * test.difference, digits)}{unit} (undecided: {test.undecided})"
    word = "significant" if adjusted < SIGNIFICANCE else f"not significant at n = {test.n}"
    return (f"{_signed(scale * test.difference, digits)}{unit} [{_signed(scale * test.ci_low, digits)}, "
            f"{_signed(scale * test.ci_high, digits)}], {word} (Holm p = {format_p(adjusted)})")


def _lower(tested: Tested | None) -> bool:
    return tested is not None and not math.isnan(tested[1]) and tested[1] < SIGNIFICANCE and tested[0].difference < 0


def verdict_lines(settings: list[Setting], reference: str, scaled_ece: float | None) -> list[str]:
    """At most three sentences: the settings that moved ECE (or the first two), then what it means beside
    temperature scaling of the reference (``scaled_ece``, a fraction; None without a validation split)."""
    if not settings:
        return [f"Only {reference} is here: nothing to compare it with."]
    moved = [s for s in settings if not math.isnan(s.ece[1]) and s.ece[1] < SIGNIFICANCE] or settings
    lines = [f"{s.label} against {reference} over {s.seeds} seeds: ECE {delta_text(s.ece)}; accuracy "
             f"{delta_text(s.accuracy)}." for s in moved[:2]]
    helps = [s for s in settings if _lower(s.ece) and not _lower(s.accuracy)]
    costly = [s.label for s in settings if _lower(s.ece) and _lower(s.accuracy)]
    names = ", ".join(s.label for s in helps)
    nothing = (f"{', '.join(costly)} lowered ECE but lost accuracy significantly: a trade, not a gain; no reason "
               "here to change β unless calibration is worth that accuracy." if costly else
               "No setting lowered ECE significantly at these seeds (which is not evidence that none does): no "
               "reason here to change β.")
    if scaled_ece is None:
        tail = (f"{names} lowered ECE without a significant accuracy loss; no validation split was there to try "
                "temperature scaling, which often does as much: hold one out and compare." if helps else nothing)
        return [*lines, tail]
    summary = f"Temperature scaling of {reference} (fitted on validation) reaches {100 * scaled_ece:.2f} % ECE."
    beats = [s for s in helps if _lower(s.versus_scaled)]
    if beats:
        summary += (f" {', '.join(s.label for s in beats)} lowered ECE significantly below that without a "
                    "significant accuracy loss: a reason here to change β.")
    elif helps:
        summary += (f" {names} lowered ECE without a significant accuracy loss, but not significantly below "
                    "temperature scaling at these seeds: try temperature scaling first.")
    else:
        summary += " " + nothing
    return [*lines, summary]


def claims_verdict(verdicts) -> list[str]:
    """One to three sentences from a study's claim verdicts (each with ``claim``, ``verdict``, ``n`` and ``p``
    fields, as :class:`~gdsoftmax.studies.verdicts.Verdict` has): per claim, how many of its tests confirm,
    refute or found nothing significant; MCE tests, from near-empty bins, never lead.

    >>> from types import SimpleNamespace as V
    >>> claims_verdict([V(claim="c", verdict="confirmed", n=3), V(claim="c", verdict="inconclusive", n=3)])
    ['`c`: 1 of 2 tests confirm it, none refutes it, 1 is not significant at n = 3 (not evidence of no effect).']
    """
    if not verdicts:
        return ["No test could be made here (see the sections below for why)."]
    lines, claims = [], list(dict.fromkeys(v.claim for v in verdicts))
    claims.sort(key=lambda claim: "mce" in claim)  # MCE, from near-empty bins, never leads
    for claim in claims[:3]:
        tests = [v for v in verdicts if v.claim == claim]
        confirm = sum(v.verdict == "confirmed" for v in tests)
        refute = sum(v.verdict == "refuted" for v in tests)
        silent = [v for v in tests if v.verdict not in ("confirmed", "refuted")]
        seeds = sorted({v.n for v in silent})
        parts = [f"{confirm} of {len(tests)} test{'s' if len(tests) != 1 else ''} confirm"
                 f"{'s' if confirm == 1 and len(tests) == 1 else ''} it",
                 "none refutes it" if not refute else f"{refute} refute{'s' if refute == 1 else ''} it"]
        if silent:
            at = " or ".join(str(n) for n in seeds)
            parts.append(f"{len(silent)} {'is' if len(silent) == 1 else 'are'} not significant at n = {at} "
                         "(not evidence of no effect)")
        marked = " Its MCE tests rest on near-empty bins." if "mce" in claim else ""
        lines.append(f"`{claim}`: {', '.join(parts)}.{marked}")
    if len(claims) > 3:
        lines[-1] += f" And {len(claims) - 3} more claim(s) in the table below."
    return lines
