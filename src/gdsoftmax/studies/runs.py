"""Finished runs as the studies read them: a :class:`Run` per run directory, loaded through the
engine's read-only :class:`~gdsoftmax.engine.rundir.view.RunView`, with the setting it belongs to.

A study never writes into a run directory; it reads :func:`load_runs` and writes its own report
folder.

>>> import tempfile
>>> load_runs(tempfile.mkdtemp())
Traceback (most recent call last):
...
FileNotFoundError: no finished runs (*/result.json) under ...
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass, field
from pathlib import Path

from gdsoftmax.analysis.binned import BinStats
from gdsoftmax.analysis.run_metrics import RunMetrics
from gdsoftmax.engine.config.schema import ExperimentConfig, to_dict
from gdsoftmax.engine.rundir.records import EpochRow
from gdsoftmax.engine.rundir.view import RunView, finished_runs
from gdsoftmax.engine.sweeps.grid import label

__all__ = ["Run", "RunMeasures", "load_runs"]


@dataclass(frozen=True)
class RunMeasures:
    """What a report measures on a run beside its scalar metrics (:func:`gdsoftmax.studies.measures.measure`)."""

    bins: BinStats  # the test split's reliability bins
    intervals: tuple[int, ...]  # training samples by final p_c, in Table 1's five intervals
    low_confidence_along_training: dict[int, int]  # recorded epoch -> training samples at p_c <= 0.2


@dataclass
class Run:
    path: Path
    config: ExperimentConfig
    rows: list[EpochRow]
    samples: dict
    predictions: dict
    metrics: RunMetrics = field(default_factory=RunMetrics)  # what the studies measured, by the vocabulary
    measures: RunMeasures | None = None  # the report's counts and bins, once measured
    extended_from: list[int] = field(default_factory=list)  # earlier lengths, if train.epochs was raised
    training_seconds: float = math.nan  # its share of the training process's wall time (NaN: not recorded)

    @property
    def setting(self) -> str:
        """The run's name without its seed part (the last ``seed=...`` token), as the sweep names settings."""
        name = self.path.name
        found = list(re.finditer(rf"(?:^|_)seed={re.escape(label(self.config.seed))}(?=_|$)", name))
        if not found:
            return name
        last = found[-1]
        return (name[: last.start()] + name[last.end() :]).strip("_") or name

    @property
    def grouping(self) -> str:
        """What makes runs the same setting: their whole config except name and seed."""
        plain = to_dict(self.config)
        del plain["name"], plain["seed"]
        return json.dumps(plain, sort_keys=True, default=str)

    @property
    def constant_beta(self) -> float | None:
        """beta of a plain beta-softmax run; None for schedules, controllers and other losses."""
        return self.config.loss.beta.constant if self.config.loss.name == "gdsoftmax" else None

    @property
    def is_warmup(self) -> bool:
        return self.config.loss.name == "gdsoftmax" and self.config.loss.beta.is_warmup

    @property
    def label(self) -> str:
        if self.constant_beta is not None or self.is_warmup:
            return self.config.loss.beta.describe(self.config.train.epochs)
        return self.setting  # another loss or an adaptive beta: its sweep label


def load_runs(sweep_dir: str | Path) -> list[Run]:
    """Every finished run below ``sweep_dir``, or the run ``sweep_dir`` is (``gdsoftmax train`` writes one)."""
    if not Path(sweep_dir).is_dir():
        raise FileNotFoundError(f"{sweep_dir} does not exist; name the folder a sweep wrote (e.g. runs/NAME)")
    runs = []
    single = RunView(sweep_dir)
    for run_dir in [single] if single.is_finished else finished_runs(sweep_dir):  # one run, or a sweep's cells
        record = run_dir.read()
        runs.append(Run(record.path, record.config, record.rows, record.samples, record.predictions,
                        extended_from=run_dir.extended_from(), training_seconds=_training_seconds(record.result)))
    if not runs:
        raise FileNotFoundError(f"no finished runs (*/result.json) under {sweep_dir}")
    return runs


def _training_seconds(result: dict | None) -> float:
    """A run's share of its process's wall time: a stacked group records the group's time on each member."""
    seconds = (result or {}).get("wall_time")
    return seconds / max((result or {}).get("stacked_runs", 1), 1) if seconds else math.nan
