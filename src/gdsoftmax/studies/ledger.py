"""The claims ledger (``docs/results/CLAIMS.md``): every registered claim of the paper, every place a
report here tested it, and one status per claim derived by a stated rule, never written by hand.

It reads each report folder's ``claims.csv`` (the verdicts its report printed) and ``runs.csv`` (the β = 1 runs
each test was compared with), and runs the numerical checks of the theory claims. ``gdsoftmax claims`` writes it.

Status rule (:func:`gdsoftmax.studies.evidence.claim_status`), counting independent settings, not tests:

* a theory claim is *confirmed* when its numerical check holds, *refuted* when it does not;
* an empirical claim counts only the tests on a data set the paper makes it on ("in scope"; all tests when the
  paper names none), and for a claim about over-confidence (``regime``) only those whose β = 1 runs are
  over-confident on the *validation* split by the claim's registered threshold, read per factor level;
* the counted tests are grouped into units of evidence (one setting with its own β = 1 runs,
  :mod:`gdsoftmax.studies.evidence`); *confirmed* needs at least two units confirming and none refuting, one is
  *supported once*; *refuted* / *refuted once* the other way; *mixed* both ways; *equivalent* only from
  equivalence tests (TOST) against a margin registered in ``paper_claims.toml``; else *inconclusive*, "not
  significant at n = k". Tests that do not count are shown as distinct settings with their direction but never
  move the status.
"""

from __future__ import annotations

import math
import re
import unicodedata
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from gdsoftmax.analysis.paper_claims import APPLIES, REGIMES, Claim, paper_claims
from gdsoftmax.analysis.stats import format_p
from gdsoftmax.analysis.theory_checks import TheoryCheck, run_check
from gdsoftmax.studies.evidence import (
    SPARSE_MCE_BIN,
    STATUSES,
    PlacedTest,
    claim_status,
    elsewhere_text,
    place_tests,
)
from gdsoftmax.studies.markdown import markdown_table
from gdsoftmax.studies.registry import STUDIES
from gdsoftmax.studies.verdicts import Verdict, read_verdicts

__all__ = ["LedgerEntry", "build_ledger", "counted", "ledger_entries", "report_verdicts"]


def counted(claim: Claim, test: PlacedTest) -> str:
    """"yes" when the test counts for the claim's status, else why not."""
    if claim.made_on and test.verdict.dataset not in claim.made_on:
        return "no: other data set"
    if claim.regime:
        if math.isnan(test.overconfidence):
            return "no: β = 1's validation over-confidence not recorded"
        if test.overconfidence < claim.regime_threshold:
            return f"no: β = 1 not over-confident on validation (< {100 * claim.regime_threshold:g} points)"
    return "yes"


@dataclass(frozen=True)
class LedgerEntry:
    claim: Claim
    tests: tuple[PlacedTest, ...]  # every test a report made of it, placed in its unit of evidence
    check: TheoryCheck | None
    status: str
    why: str  # what the status rests on, in one line
    anchors: dict = None  # report folder -> {"claim|setting": the anchor of the section printing that row}

    def counted(self, test: PlacedTest) -> str:
        return counted(self.claim, test)


def heading_anchor(heading: str) -> str:
    """The anchor the documentation site gives a heading (Python-Markdown's default slug).

    >>> heading_anchor("The warm-up against A-Softmax and Center loss"), heading_anchor("τ and β")
    ('the-warm-up-against-a-softmax-and-center-loss', 'and')
    """
    ascii_text = unicodedata.normalize("NFKD", heading).encode("ascii", "ignore").decode("ascii")
    return re.sub(r"[-\s]+", "-", re.sub(r"[^\w\s-]", "", ascii_text).strip().lower())


def report_anchors(results_dir: str | Path) -> dict[str, dict[str, str]]:
    """Per report folder, the anchor of the section under which each claims-table row ("claim|setting") is
    printed, read from its report.md, so the ledger links each test to the table that shows it."""
    anchors = {}
    for path in sorted(Path(results_dir).glob("*/report.md")):
        found, section = {}, ""
        for line in path.read_text(encoding="utf-8").splitlines():
            if line.startswith("## "):
                section = heading_anchor(line[3:])
            elif line.startswith("| `"):
                cells = [c.strip() for c in line.strip("|").split("|")]
                found.setdefault(f"{cells[0].strip('`')}|{cells[1]}", section)
        anchors[path.parent.name] = found
    return anchors


def report_verdicts(results_dir: str | Path) -> list[tuple[str, Verdict]]:
    """(report folder name, verdict) for every ``*/claims.csv`` under ``results_dir``, in folder order."""
    found = sorted(Path(results_dir).glob("*/claims.csv"))
    return [(path.parent.name, v) for path in found for v in read_verdicts(path)]


def ledger_entries(results_dir: str | Path) -> list[LedgerEntry]:
    """One entry per registered claim, with every verdict the reports under ``results_dir`` give it."""
    verdicts = report_verdicts(results_dir)
    known = {c.id for c in paper_claims()}
    stray = sorted({v.claim for _, v in verdicts} - known)
    if stray:
        raise ValueError(f"reports under {results_dir} test claims that are not registered: {', '.join(stray)}; "
                         "regenerate those reports or register the claims in paper_claims.toml")
    margins = {c.id: c.test.margin for c in paper_claims() if c.test is not None}
    placed = place_tests(results_dir, verdicts, margins)
    anchors = report_anchors(results_dir)
    entries = []
    for claim in paper_claims():
        tests = tuple(t for t in placed if t.verdict.claim == claim.id)
        check = run_check(claim.check) if claim.check else None
        if claim.kind == "theory":
            status, why = ("confirmed" if check.holds else "refuted"), f"numerical check: {check.detail}"
        else:
            status, why = claim_status(claim, [t for t in tests if counted(claim, t) == "yes"])
            if claim.test is not None and "mce" in claim.test.metric and status != "untested":
                why += _mce_basis([t for t in tests if counted(claim, t) == "yes"])
        entries.append(LedgerEntry(claim, tests, check, status, why, anchors))
    return entries


def _mce_basis(tests: list[PlacedTest]) -> str:
    """What an MCE status rests on: one bin per run, and how many counted tests read it from a sparse bin."""
    recorded = [t for t in tests if not math.isnan(t.mce_bin)]
    sparse = sum(t.mce_bin < SPARSE_MCE_BIN for t in recorded)
    return (f"; MCE is one bin's gap: {sparse} of {len(recorded)} tests that recorded it read a bin of fewer than "
            f"{SPARSE_MCE_BIN} test samples, {len(tests) - len(recorded)} did not record the bin")


def _counts_line(entries: list[LedgerEntry]) -> str:
    counts = Counter(e.status for e in entries)
    reasons = Counter(r for e in entries if e.status == "untested" for r in e.why.split("; "))
    return (f"{len(entries)} claims: " + ", ".join(f"{counts[s]} {s}" for s in STATUSES)
            + (" (reasons for the untested, a claim can have several: "
               + ", ".join(f"{n} {r}" for r, n in sorted(reasons.items())) + ")"
               if reasons else "") + ".")


def _summary(entries: list[LedgerEntry]) -> list[str]:
    rows = []
    for e in entries:
        elsewhere = [t for t in e.tests if e.counted(t) != "yes"]
        rows.append([f"[`{e.claim.id}`](#{e.claim.id})", e.claim.says, f"**{e.status}**", e.why,
                     elsewhere_text(elsewhere)])
    return [markdown_table(["claim", "says (our words)", "status", "rests on (counted)",
                            "not counted (other data set or regime)"], rows), ""]


def _regime_cell(test: PlacedTest) -> str:
    return "not recorded" if math.isnan(test.overconfidence) else f"{100 * test.overconfidence:+.1f}"


def _tost_cell(test: PlacedTest) -> str:
    return "—" if test.equivalent is None else "equivalent" if test.equivalent else "no"


def _test_rows(entry: LedgerEntry) -> list[list[str]]:
    rows = []
    for test in entry.tests:
        v = test.verdict
        anchor = (entry.anchors or {}).get(test.report, {}).get(f"{v.claim}|{v.setting}")
        link = f"{test.report}/report.md" + (f"#{anchor}" if anchor else "")
        sparse = "mce" in v.family and test.mce_bin < SPARSE_MCE_BIN
        setting = v.setting + (f" (MCE from a bin of {test.mce_bin:.0f} samples)" if sparse else "")
        rows.append([f"[{test.report}]({link})", test.unit, v.dataset, v.model, str(v.epochs), str(v.n), setting,
                     _regime_cell(test), v.delta_text(), format_p(v.holm_p) if not math.isnan(v.holm_p) else "—",
                     f"{v.family} (k = {v.family_size})", v.verdict, _tost_cell(test), entry.counted(test)])
    return rows


def _untested_lines(claim: Claim) -> list[str]:
    lines = []
    for u in claim.untested:
        how = f": `{u.config}`" if u.config else f": {u.command}" if u.command else ""
        lines.append(f"- not tested on {u.scope} ({u.reason}{how})")
    return lines


def _decided_by(claim: Claim) -> list[str]:
    """Which command tests the claim, from the study registry: its own study, or every β sweep's report."""
    own = [s for s in STUDIES.values() if claim.id in s.claims]
    if own:
        return ["Decided by: " + "; ".join(f"`gdsoftmax study {s.kind}` on a sweep of `{s.config}`" for s in own)
                + "."]
    if claim.test is None or claim.kind == "theory":
        return []
    readers = ", ".join(f"`{s.kind}`" for s in STUDIES.values() if not s.claims)
    return [f"Decided by: the report of any β sweep (`gdsoftmax report`, and the studies built on it: {readers})."]


def _entry_section(entry: LedgerEntry) -> list[str]:
    claim = entry.claim
    lines = [f"## {claim.id}", "", f"**{claim.says}.** Status: **{entry.status}** ({entry.why}).", "",
             *([f"Read with this caveat: {claim.caveat}.", ""] if claim.caveat else []),
             "Where the paper makes it: " + "; ".join(s.cite() for s in claim.sources) + ".",
             f"Made on: {', '.join(claim.made_on) or 'no particular data set'}"
             + (f"; counted only {REGIMES[claim.regime]} (β = 1's mean confidence − accuracy there ≥ "
                f"{100 * claim.regime_threshold:g} points, per factor level)." if claim.regime else ".")]
    if claim.test is not None:
        t = claim.test
        lines.append(f"Test: {t.metric} at {APPLIES[t.applies]}, {'higher' if t.direction > 0 else 'lower'} than "
                     f"β = 1's {t.baseline_metric}, paired by seed." if t.applies != "trend" else
                     f"Test: the slope of {t.metric} over log10 β, {'rising' if t.direction > 0 else 'falling'}.")
    lines += [*_decided_by(claim), ""]
    if entry.tests:
        margin = claim.test.margin if claim.test is not None else 0.0
        equivalence = (f"TOST: two one-sided tests against ±{margin:g} (printed units), Bonferroni over the Holm "
                       "family" if margin else "TOST: no margin registered for this claim")
        lines += [markdown_table(["report", "evidence unit", "data set", "model", "epochs", "seeds", "setting",
                                  "β = 1 val. over-conf. (points)", "Δ [95 % CI]", "Holm p", "Holm family",
                                  "verdict", "TOST", "counted"], _test_rows(entry)), "", equivalence + ".", ""]
    lines += _untested_lines(claim)
    return [*lines, ""] if claim.untested else lines


def build_ledger(results_dir: str | Path) -> str:
    """The text of ``CLAIMS.md`` for the reports under ``results_dir``."""
    entries = ledger_entries(results_dir)
    lines = ["# The paper's claims and what became of them", "",
             "<!-- Generated by `gdsoftmax claims`; edit paper_claims.toml or the reports, then regenerate. -->", "",
             "Every claim either version of the paper makes, registered with its source in "
             "`src/gdsoftmax/analysis/paper_claims.toml`, beside every test a report here made of it (each "
             "report's `claims.csv`, recomputable from its `runs.csv`). Verdicts are per report: *confirmed* or "
             "*refuted* only when the Holm-corrected p is below 0.05 (the family is named in each row).", "",
             "**How a claim's status is derived.** A theory claim is *confirmed* when its numerical check on our "
             "loss (float64 autograd, `gdsoftmax.analysis.theory_checks`) holds. An empirical claim counts only "
             "tests on a data set the paper makes it on (*in scope*); a claim that large β mitigates "
             "over-confidence counts only tests whose β = 1 runs (at the same factor level) are over-confident on "
             "the *validation* split, by the threshold the claim registers (the column *β = 1 val. over-conf.* "
             "prints it for every test; a report that did not record it cannot count). Counted tests are grouped "
             "into **independent settings**: one data set, model and recipe with its own β = 1 runs, so that "
             "reports sharing their β = 1 runs count once. A setting confirms when a test in it confirms and none "
             "refutes (refutes the other way), is *equivalent* when every test in it is equivalent to β = 1 by two "
             "one-sided tests against the margin `paper_claims.toml` registers, and is otherwise not significant. "
             "Then: *confirmed* needs **two or more** settings confirming and none refuting; one alone is "
             "*supported once*; *refuted* and *refuted once* the same the other way; *mixed* when settings "
             "disagree; *equivalent* only from equivalence tests; *inconclusive* says at how many seeds nothing "
             "was significant, which is not evidence of no effect; *untested* with no counted test (the reason "
             "is given). Tests that do not count are shown as distinct settings with their direction, but never "
             "move a status.", "",
             _counts_line(entries), "", *_summary(entries)]
    for entry in entries:
        lines += _entry_section(entry)
    return "\n".join(lines).rstrip() + "\n"
