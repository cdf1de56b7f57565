"""The runs of the Table 1 study as cells: one (arm, β) with its seeds and its first-row counts
(training samples with p_c <= 0.2) at every recorded epoch, and how the study formats numbers.

An arm is a factor-study variant (its sweep label); the recipe's own runs are the arm "as stated".

>>> arm_of("narrow-20-10_beta=0.001"), arm_of("beta=0.001")
('narrow-20-10', 'as stated')
"""

from __future__ import annotations

from dataclasses import dataclass, field

from gdsoftmax.analysis import plots
from gdsoftmax.analysis.paper import lookup
from gdsoftmax.analysis.stats import mean_std
from gdsoftmax.studies.runs import Run

__all__ = [
    "PAPER_METRIC",
    "REFERENCE_ARM",
    "Cell",
    "arm_of",
    "cells_of",
    "delta_text",
    "final_counts",
    "final_test_accuracy",
    "mean_cell",
    "paper_count",
]

PAPER_METRIC = "training samples with p_c in the interval"
REFERENCE_ARM = "as stated"


def arm_of(setting: str) -> str:
    """The factor arm of a sweep setting: its name before ``_beta=`` (a plain β sweep has none)."""
    head, sep, _ = setting.partition("_beta=")
    return head if sep and head else REFERENCE_ARM


@dataclass
class Cell:
    """The runs of one (arm, β), seeds in order, with their first-row counts at each recorded epoch."""

    runs: list[Run]
    low: dict[int, list[int]] = field(default_factory=dict)  # epoch -> per seed, samples with p_c <= 0.2

    @property
    def seeds(self) -> list[int]:
        return [r.config.seed for r in self.runs]

    def at(self, epoch: int, seeds: list[int]) -> list[int]:
        return [self.low[epoch][self.seeds.index(s)] for s in seeds]


def cells_of(runs: list[Run]) -> dict[tuple[str, float], Cell]:
    cells: dict[tuple[str, float], Cell] = {}
    for run in sorted(runs, key=lambda r: r.config.seed):
        if run.constant_beta is None:
            continue
        cell = cells.setdefault((arm_of(run.setting), run.constant_beta), Cell([]))
        cell.runs.append(run)
        for epoch, p_true in zip(run.samples["epochs"], run.samples["p_true"], strict=True):
            cell.low.setdefault(int(epoch), []).append(plots.interval_counts(p_true)[0])
    return cells


def final_counts(run: Run) -> list[int]:
    return plots.interval_counts(run.samples["p_true"][-1])


def final_test_accuracy(run: Run) -> float:
    return 100 * run.rows[-1]["test_acc"]


def mean_cell(values, digits=0) -> str:
    mean, std = mean_std(values)
    return f"{mean:.{digits}f} ± {std:.{digits}f}"


def delta_text(c, digits=0) -> str:
    """Δ with its 95 % interval, or Δ and why no test was made."""
    if getattr(c, "undecided", None):
        return f"{c.difference:+.{digits}f} (undecided: {c.undecided})"
    return f"{c.difference:+.{digits}f} [{c.ci_low:+.{digits}f}, {c.ci_high:+.{digits}f}]"


def paper_count(interval: str, beta: float) -> int | None:
    found = lookup("mnist", "fcnn", f"{PAPER_METRIC} {interval}", f"{beta:g}", version="arXiv v1")
    return int(found[0].value) if found else None
