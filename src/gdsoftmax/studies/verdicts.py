"""A report's verdicts as data (``claims.csv`` beside ``report.md``): one row per claim and setting,
with the data set, model and length it was tested on, the effect with its 95 % interval, the raw and
Holm-corrected p and the family the correction ran over. The ledger (``gdsoftmax claims``) reads
these files; the report prints the same rows.

>>> v = Verdict("small-beta-margin", "claims", "mnist", "fcnn", 100, "β = 0.1", 3, 9.8, 7.8, 2.0, 1.5, 2.5,
...             3.1, 0.01, 0.03, "margin vs β = 1", 4, "confirmed")
>>> v.delta_text()
'+2 [+1.5, +2.5]'
"""

from __future__ import annotations

import csv
import math
from dataclasses import dataclass, fields
from pathlib import Path

from gdsoftmax.analysis.stats import format_p
from gdsoftmax.studies.run_table import write_csv

__all__ = ["Verdict", "read_verdicts", "write_verdicts"]


@dataclass(frozen=True)
class Verdict:
    claim: str  # the registered claim id
    section: str  # the report section (its anchor) that prints the row
    dataset: str
    model: str
    epochs: int
    setting: str  # the setting compared with β = 1 (or the trend's description)
    n: int  # seeds paired (runs, for a trend)
    treatment: float  # mean of the setting's values, as printed (scaled)
    baseline: float  # mean of β = 1's values (NaN for a trend)
    delta: float  # mean paired difference, or the slope per decade of β
    ci_low: float
    ci_high: float
    effect: float  # d_z, or Pearson's r for a trend
    p: float
    holm_p: float
    family: str  # what the Holm correction ran over
    family_size: int
    verdict: str  # confirmed / refuted / inconclusive / undecided: ...

    def delta_text(self) -> str:
        if math.isnan(self.ci_low):
            return f"{self.delta:+.3g}"
        return f"{self.delta:+.3g} [{self.ci_low:+.3g}, {self.ci_high:+.3g}]"

    def cells(self) -> list[str]:
        """The row of a report's claims table."""
        return [f"`{self.claim}`", self.setting, "—" if math.isnan(self.treatment) else f"{self.treatment:.3g}",
                "—" if math.isnan(self.baseline) else f"{self.baseline:.3g}", self.delta_text(),
                "—" if math.isnan(self.effect) else f"{self.effect:+.2f}", format_p(self.p),
                format_p(self.holm_p), f"{self.family} (k = {self.family_size})", self.verdict]


HEADER = [f.name for f in fields(Verdict)]
_INTS = {"epochs", "n", "family_size"}
_FLOATS = {"treatment", "baseline", "delta", "ci_low", "ci_high", "effect", "p", "holm_p"}


def write_verdicts(path: str | Path, verdicts: list[Verdict]) -> None:
    """Write ``claims.csv`` atomically."""
    write_csv(path, HEADER, [[repr(float(getattr(v, k))) if k in _FLOATS else getattr(v, k) for k in HEADER]
                             for v in verdicts])


def read_verdicts(path: str | Path) -> list[Verdict]:
    with open(path, encoding="utf-8", newline="") as handle:
        records = list(csv.DictReader(handle))
    if records and list(records[0]) != HEADER:
        raise ValueError(f"{path}: not a claims.csv of this version (columns {list(records[0])}); regenerate "
                         "its report")
    return [Verdict(**{k: int(v) if k in _INTS else float(v) if k in _FLOATS else v for k, v in r.items()})
            for r in records]
