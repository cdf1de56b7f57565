"""Evidence as the ledger counts it: independent settings, not tests (issue 40).

A *unit of evidence* is one setting (data set, model, recipe) with its own β = 1 runs. Every test of a report is
placed in the unit of the β = 1 runs it was compared with (the same factor level of the report's sweep): reports
whose β = 1 runs are the same runs (the same seeds with the same values, read from their ``runs.csv``) are one unit,
so a comparison printed by four reports counts once.

Each test also carries:

* the regime of its β = 1 runs: their mean confidence − accuracy on the *validation* split (NaN where the report
  did not record it; NaN seeds are left out of the mean, and a level with none is "not recorded");
* an equivalence test where the claim registers a margin: two one-sided t-tests (TOST) of the paired effect
  against ±margin, from the report's own 95 % interval (its standard error is the half-width over t₀.₉₇₅), at
  α = 0.05 with Bonferroni over the report's Holm family size; "equivalent" only when both one-sided tests reject;
* for MCE tests, the samples in the bin MCE comes from, where the report recorded it.

A unit's outcome for a claim: *confirmed* when some counted test in it confirms and none refutes, *refuted* the
other way, *mixed* when both, *equivalent* when every counted test in it is equivalent by TOST, else
*inconclusive*. :func:`claim_status` turns the units' outcomes into the claim's status.

>>> equivalence_p(delta=0.1, ci_low=-0.2, ci_high=0.4, n=5, margin=1.0) < 0.05
True
>>> equivalence_p(delta=0.1, ci_low=-2.0, ci_high=2.2, n=5, margin=1.0) < 0.05
False
"""

from __future__ import annotations

import hashlib
import json
import math
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from scipy import stats

from gdsoftmax.analysis.paper_claims import Claim
from gdsoftmax.studies.run_table import RunRow, read_runs_csv
from gdsoftmax.studies.verdicts import Verdict

__all__ = ["SPARSE_MCE_BIN", "STATUSES", "PlacedTest", "claim_status", "elsewhere_text", "equivalence_p", "place_tests",
           "unit_outcome", "units_of"]

STATUSES = ("confirmed", "supported once", "mixed", "refuted once", "refuted", "equivalent", "inconclusive",
            "untested")
SPARSE_MCE_BIN = 30  # an MCE read from a bin of fewer test samples than this is marked: one bin, few samples
# swept keys that name the compared setting rather than the level its β = 1 runs belong to
_SETTING_KEYS = ("loss.beta", "loss.name", "loss.options", "variants")


def equivalence_p(delta: float, ci_low: float, ci_high: float, n: int, margin: float) -> float:
    """The TOST p-value of a paired effect against ±``margin`` (printed units), from its 95 % t-interval."""
    if not (margin > 0 and n >= 2 and math.isfinite(ci_low) and math.isfinite(ci_high)):
        return math.nan
    df = n - 1
    se = (ci_high - ci_low) / (2 * stats.t.ppf(0.975, df))
    if se <= 0:
        return 0.0 if abs(delta) < margin else 1.0
    return float(max(stats.t.sf((delta + margin) / se, df), stats.t.cdf((delta - margin) / se, df)))


@dataclass(frozen=True)
class PlacedTest:
    report: str
    verdict: Verdict
    unit: str  # the evidence unit: the reports sharing these β = 1 runs, and the factor level if any
    overconfidence: float  # β = 1's mean validation confidence − accuracy at this level; NaN: not recorded
    equivalent: bool | None  # by TOST against the claim's margin; None where no margin is registered
    mce_bin: float = math.nan  # test samples in the bin MCE was read from (mean over seeds), where recorded

    @property
    def outcome(self) -> str:
        v = self.verdict.verdict
        return v if v in ("confirmed", "refuted") else "equivalent" if self.equivalent else "inconclusive"


def _level(rows: list[RunRow], setting: str) -> dict[str, str]:
    mine = [r for r in rows if r.label == setting]
    if not mine:
        return {}
    return {k: v for k, v in mine[0].swept.items() if not k.startswith(_SETTING_KEYS)}


def _references(rows: list[RunRow], level: dict[str, str]) -> list[RunRow]:
    ones = [r for r in rows if r.constant_beta == 1.0 and not r.is_warmup]
    at_level = [r for r in ones if all(r.swept.get(k) == v for k, v in level.items())]
    return at_level or ones


def _fingerprint(reference: list[RunRow]) -> str:
    key = sorted((r.dataset, r.model, r.seed, repr(r.metrics.get("test accuracy")), repr(r.metrics.get("test ece")))
                 for r in reference)
    return hashlib.sha256(json.dumps(key).encode()).hexdigest()[:12]


def _overconfidence(reference: list[RunRow]) -> float:
    values = [r.metrics.val_overconfidence for r in reference if r.metrics.finite("val overconfidence")]
    return sum(values) / len(values) if values else math.nan


def place_tests(results_dir: str | Path, verdicts: list[tuple[str, Verdict]],
                margins: dict[str, float]) -> list[PlacedTest]:
    """Each (report, verdict) placed in its evidence unit, with its regime, TOST and MCE bin."""
    runs = {p.parent.name: read_runs_csv(p) for p in sorted(Path(results_dir).glob("*/runs.csv"))}
    found = []
    for report, v in verdicts:
        rows = runs.get(report, [])
        level = _level(rows, v.setting)
        reference = _references(rows, level)
        where = ", ".join(f"{k} = {json.loads(x) if x else x}" for k, x in sorted(level.items()))
        key = (_fingerprint(reference) if reference else report) + (f"|{where}" if where else "")
        margin = margins.get(v.claim, 0.0)
        equivalent = None if not margin or v.setting.startswith("slope") else (
            min(1.0, equivalence_p(v.delta, v.ci_low, v.ci_high, v.n, margin) * max(1, v.family_size)) < 0.05)
        bins = [r.metrics["mce bin count"] for r in rows if r.label == v.setting and "mce bin count" in r.metrics]
        found.append(PlacedTest(report, v, key, _overconfidence(reference), equivalent,
                                sum(bins) / len(bins) if bins else math.nan))
    names: dict[str, set[str]] = {}
    for t in found:
        names.setdefault(t.unit, set()).add(t.report)
    return [PlacedTest(t.report, t.verdict, _unit_name(t.unit, names[t.unit]), t.overconfidence, t.equivalent,
                       t.mce_bin) for t in found]


def _unit_name(key: str, reports: set[str]) -> str:
    _, _, where = key.partition("|")
    return " + ".join(sorted(reports)) + (f" ({where})" if where else "")


def unit_outcome(tests: list[PlacedTest]) -> str:
    """One unit's outcome for a claim, from its counted tests."""
    outcomes = Counter(t.outcome for t in tests)
    if outcomes["confirmed"] and outcomes["refuted"]:
        return "mixed"
    if outcomes["confirmed"] or outcomes["refuted"]:
        return "confirmed" if outcomes["confirmed"] else "refuted"
    return "equivalent" if tests and outcomes["equivalent"] == len(tests) else "inconclusive"


def units_of(tests: list[PlacedTest]) -> dict[str, str]:
    """Evidence unit -> its outcome, in the order the tests come."""
    grouped: dict[str, list[PlacedTest]] = {}
    for t in tests:
        grouped.setdefault(t.unit, []).append(t)
    return {unit: unit_outcome(mine) for unit, mine in grouped.items()}


def claim_status(claim: Claim, counted: list[PlacedTest]) -> tuple[str, str]:
    """The status of an empirical claim from its counted tests, and what it rests on in one line.

    *confirmed* needs two or more independent settings confirming and none refuting; one alone is *supported
    once* (and *refuted once* the other way); both ways is *mixed*; *equivalent* only where equivalence tests
    say so in every counted setting; otherwise *inconclusive*, which says at how many seeds.
    """
    if not counted:
        return "untested", "; ".join(sorted({u.reason for u in claim.untested})) or "not yet run"
    units = units_of(counted)
    n = Counter(units.values())
    seeds = sorted({t.verdict.n for t in counted})
    at = f"n = {seeds[0]}" if len(seeds) == 1 else f"n = {seeds[0]}-{seeds[-1]}"
    why = (f"{len(units)} independent setting{'s' if len(units) != 1 else ''} ({len(counted)} "
           f"test{'s' if len(counted) != 1 else ''}): "
           f"{n['confirmed']} confirm, {n['refuted']} refute, {n['mixed']} mixed, {n['equivalent']} equivalent, "
           f"{n['inconclusive']} not significant at {at}")
    if n["mixed"] or (n["confirmed"] and n["refuted"]):
        return "mixed", why
    if n["confirmed"]:
        return ("confirmed" if n["confirmed"] >= 2 else "supported once"), why
    if n["refuted"]:
        return ("refuted" if n["refuted"] >= 2 else "refuted once"), why
    if n["equivalent"] and not n["inconclusive"]:  # every counted setting equivalent: none merely not significant
        return "equivalent", why
    return "inconclusive", why


def elsewhere_text(tests: list[PlacedTest]) -> str:
    """The tests that do not count, as distinct settings with their direction: "2 settings refute, 1 confirms"."""
    if not tests:
        return "—"
    n = Counter(units_of(tests).values())
    verbs = {"confirmed": "confirm", "refuted": "refute", "mixed": "mixed", "equivalent": "equivalent",
             "inconclusive": "not significant"}
    total = sum(n.values())
    return ", ".join(f"{n[k]} {v}" for k, v in verbs.items() if n[k]) + f" (of {total} setting{'s' * (total != 1)})"
