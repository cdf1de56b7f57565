"""The paper's claims as data (``paper_claims.toml`` beside this file): what each claim says in our
words, where each version makes it, the data sets it is made on, and the test that decides it.

Reports test the claims that carry a ``test``; the theory claims carry a numerical ``check``
(:mod:`gdsoftmax.analysis.theory_checks`); the ledger (``gdsoftmax claims``) sets every report's
verdicts beside each claim and says why the others are untested.

>>> claim = claim_by_id("large-beta-ece")
>>> claim.test.metric, claim.test.applies, claim.test.direction
('test ece', 'large', -1)
>>> "cifar10" in claim.made_on
True
"""

from __future__ import annotations

import functools
import tomllib
from dataclasses import dataclass
from pathlib import Path

from gdsoftmax.analysis.run_metrics import CSV_METRICS

__all__ = [
    "APPLIES",
    "REGIMES",
    "REGIME_THRESHOLD",
    "Claim",
    "ClaimTest",
    "Source",
    "Untested",
    "claim_by_id",
    "claims_with_tests",
    "paper_claims",
]

SOURCE = Path(__file__).with_name("paper_claims.toml")
APPLIES = {  # which settings a test compares with beta = 1, and how a report names that family
    "small": "β < 1",
    "over-small": "β ≤ 0.1",
    "large": "β > 1",
    "warmup": "β warm-ups",
    "trend": "slope over log10 β",
}
UNTESTED_REASONS = ("no data here", "needs a GPU", "not yet run")


@dataclass(frozen=True)
class Source:
    version: str  # "arXiv v1" or "ICLR 2024 submission"
    where: str  # section, figure or table
    lines: str  # line numbers in shared/paper's copy of that version

    def cite(self) -> str:
        return f"{self.version} {self.where}, lines {self.lines}"


@dataclass(frozen=True)
class ClaimTest:
    metric: str  # the per-run value compared (a runs.csv column)
    applies: str  # a key of APPLIES
    direction: int  # +1: the claim says the value rises; -1: falls
    scale: float = 1.0  # the factor reports print it with
    baseline: str = ""  # the baseline's value when it is another quantity
    # the equivalence margin, in the printed units (points for a scale of 100): a setting whose effect lies
    # within +-margin by two one-sided tests is "equivalent"; 0: no equivalence is registered for this claim
    margin: float = 0.0

    @property
    def baseline_metric(self) -> str:
        return self.baseline or self.metric

    def covers(self, constant_beta: float | None, is_warmup: bool) -> bool:
        """Whether a setting (its constant β, or a warm-up) is one this test compares with β = 1."""
        if self.applies == "warmup":
            return is_warmup
        if constant_beta is None:
            return False
        return {"small": constant_beta < 1, "over-small": constant_beta <= 0.1, "large": constant_beta > 1,
                "trend": True}[self.applies]


@dataclass(frozen=True)
class Untested:
    scope: str  # the data sets or setting the paper uses that no report here covers
    reason: str  # one of UNTESTED_REASONS
    config: str = ""  # for "needs a GPU": the config that would run it
    command: str = ""  # for "not yet run": what would run it


@dataclass(frozen=True)
class Claim:
    id: str
    says: str  # one line, our paraphrase
    kind: str  # "theory" or "empirical"
    sources: tuple[Source, ...]
    made_on: tuple[str, ...]  # the data sets the paper makes it on (empty: none named, or theory)
    test: ClaimTest | None = None
    check: str = ""  # theory: the numerical check's name
    untested: tuple[Untested, ...] = ()
    regime: str = ""  # "overconfident": only tests where β = 1 is over-confident count (see paper_claims.toml)
    # the regime's gate: β = 1's mean confidence − accuracy on the validation split at least this (a fraction)
    regime_threshold: float = 0.0
    caveat: str = ""  # what every verdict of the claim is read with (e.g. the effective learning rate)


REGIMES = {"overconfident": "where the report's β = 1 runs are over-confident on the validation split"}
# the over-confidence gate of the calibration claims, registered before the replication runs of issue 40: β = 1's
# mean confidence − accuracy on the validation split at least 3 points (the paper's own ResNet18 CE has an ECE of
# 0.038, ICLR Table 3)
REGIME_THRESHOLD = 0.03


def _claim(record: dict) -> Claim:
    where = f"{SOURCE.name}: claim {record.get('id', '?')!r}"
    unknown = set(record) - {"id", "says", "kind", "sources", "made_on", "test", "check", "untested", "regime",
                             "regime_threshold", "caveat"}
    if unknown:
        raise ValueError(f"{where}: unknown fields {sorted(unknown)}")
    test = ClaimTest(**record["test"]) if "test" in record else None
    if test is not None and (test.applies not in APPLIES or test.direction not in (1, -1)):
        raise ValueError(f"{where}: test.applies must be one of {sorted(APPLIES)} and direction +1 or -1")
    unread = [name for name in (test.metric, test.baseline_metric) if name not in CSV_METRICS] if test else []
    if unread:  # a verdict is recomputed from runs.csv, so its metric must be one of its columns
        raise ValueError(f"{where}: test metric {unread[0]!r} is not a per-run metric runs.csv holds; "
                         f"those are: {', '.join(CSV_METRICS)} (gdsoftmax.analysis.run_metrics)")
    untested = tuple(Untested(**u) for u in record.get("untested", []))
    if any(u.reason not in UNTESTED_REASONS for u in untested):
        raise ValueError(f"{where}: an untested reason must be one of {UNTESTED_REASONS}")
    if record["kind"] not in ("theory", "empirical") or (record["kind"] == "theory") != bool(record.get("check")):
        raise ValueError(f"{where}: a theory claim names its check, an empirical one does not")
    if record.get("regime", "") not in ("", *REGIMES):
        raise ValueError(f"{where}: regime must be one of {sorted(REGIMES)}")
    threshold = record.get("regime_threshold", REGIME_THRESHOLD if record.get("regime") else 0.0)
    return Claim(record["id"], record["says"], record["kind"], tuple(Source(**s) for s in record["sources"]),
                 tuple(record["made_on"]), test, record.get("check", ""), untested, record.get("regime", ""),
                 threshold, record.get("caveat", ""))


@functools.cache
def paper_claims() -> tuple[Claim, ...]:
    """Every registered claim, in the file's order."""
    claims = tuple(_claim(r) for r in tomllib.loads(SOURCE.read_text(encoding="utf-8"))["claims"])
    ids = [c.id for c in claims]
    if len(set(ids)) != len(ids):
        raise ValueError(f"{SOURCE.name}: claim ids repeat: {sorted({i for i in ids if ids.count(i) > 1})}")
    return claims


def claim_by_id(claim_id: str) -> Claim:
    """The registered claim ``claim_id``; KeyError naming the known ids otherwise."""
    for claim in paper_claims():
        if claim.id == claim_id:
            return claim
    raise KeyError(f"no claim {claim_id!r}; known: {', '.join(c.id for c in paper_claims())}")


def claims_with_tests(applies: set[str] | None = None) -> list[Claim]:
    """The claims a sweep report can decide (those with a test), optionally only some kinds of test."""
    return [c for c in paper_claims() if c.test is not None and (applies is None or c.test.applies in applies)]
