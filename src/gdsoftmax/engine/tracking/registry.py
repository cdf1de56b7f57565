"""Where a run is mirrored (``train.log``): the :class:`Tracker` protocol and the registry of trackers.

``metrics.jsonl`` stays the source of truth; each tracker is fed a row after the row is written, and the final
predictions once the run finishes. Only the main process logs. A tracker kind is one :data:`TRACKERS` entry:

* ``require()`` fails, in one line naming the install, before any run starts when its package is missing;
* ``open(config, run_dir, done_rows, labels, out_dir)`` gives the :class:`Tracker` of one run: it continues the
  tracker's run when the run directory resumes (``done_rows``, the rows it holds) and discards what the tracker
  held for that directory when it starts anew (``--restart``);
* ``finish_sweep(config, out_dir)`` closes what a sweep opened (MLflow's parent run), where there is such a thing;
* ``next_step(folder, out_dir)`` is the line the command line prints to look at the runs;
* ``discard(run_dir)`` removes what the tracker wrote into a run directory that starts anew (``--restart``),
  where it writes there.

A new tracker is one module and one entry here (and its name in ``config_checks.LOGGERS``, which a test keeps in
step with this registry).

>>> sorted(TRACKERS)
['mlflow', 'tensorboard', 'wandb']
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np

from gdsoftmax.engine.config.schema import ExperimentConfig
from gdsoftmax.engine.rundir.view import RunView
from gdsoftmax.engine.tracking.labels import RunLabels, run_labels
from gdsoftmax.engine.tracking.mlflow import TRACKING_DB, MLflowLog, finish_sweep, require_mlflow
from gdsoftmax.engine.tracking.tensorboard import TensorBoardLog, discard_events, require_tensorboard
from gdsoftmax.engine.tracking.wandb import WANDB_DIR, WandbLog, require_wandb

__all__ = ["TRACKERS", "RunLoggers", "Tracker", "TrackerKind", "discard_tracked", "finish_sweep_trackers", "next_steps",
           "open_loggers", "require_loggers"]


class Tracker(Protocol):
    """One run's mirror in a tracker."""

    def epoch(self, row: dict) -> None: ...

    def finish(self, config: ExperimentConfig, result: dict, test_logits: np.ndarray | None,
               test_labels: np.ndarray | None) -> None: ...


@dataclass(frozen=True)
class TrackerKind:
    require: Callable[[], None]
    open: Callable[[ExperimentConfig, Path, list[dict], RunLabels, Path], Tracker]
    next_step: Callable[[str, Path], str]
    finish_sweep: Callable[[ExperimentConfig, Path], None] | None = None
    discard: Callable[[Path], None] | None = None


def _tensorboard(config, run_dir, done_rows, labels, out_dir) -> Tracker:
    return TensorBoardLog(run_dir, len(done_rows), labels)  # drops the events of epochs the run trains again


def _mlflow(config, run_dir, done_rows, labels, out_dir) -> Tracker:
    log = MLflowLog(run_dir, labels, out_dir, RunView(run_dir).fingerprint(), resumed=bool(done_rows))
    log.params(config)
    for row in done_rows:  # a kill between a row's write and its logging left the store behind: catch up
        log.epoch(row)
    return log


def _wandb(config, run_dir, done_rows, labels, out_dir) -> Tracker:
    return WandbLog(run_dir, labels, out_dir, RunView(run_dir).fingerprint(), config, resumed=bool(done_rows))


def _tensorboard_next_step(folder: str, out_dir: Path) -> str:
    return f"  tensorboard --logdir {folder}    # the curves of every run, side by side"


def _mlflow_next_step(folder: str, out_dir: Path) -> str:
    if os.environ.get("MLFLOW_TRACKING_URI"):
        return f"  the runs are in MLflow at {os.environ['MLFLOW_TRACKING_URI']}"
    return f"  mlflow ui --backend-store-uri sqlite:///{out_dir / TRACKING_DB}    # the sweep's runs in MLflow"


def _wandb_next_step(folder: str, out_dir: Path) -> str:
    mode = os.environ.get("WANDB_MODE", "offline")
    if mode in ("online", "run", "shared"):
        return f"  the runs are in Weights & Biases (WANDB_MODE={mode})"
    if mode not in ("offline", "dryrun"):  # disabled, or no mode W&B knows: it logged nothing
        return f"  (WANDB_MODE={mode}: W&B logged nothing)"
    return f"  wandb sync {out_dir / WANDB_DIR / 'wandb'}/offline-run-*    # upload the offline runs to W&B"


TRACKERS: dict[str, TrackerKind] = {
    "tensorboard": TrackerKind(require_tensorboard, _tensorboard, _tensorboard_next_step, discard=discard_events),
    "mlflow": TrackerKind(require_mlflow, _mlflow, _mlflow_next_step, finish_sweep),
    "wandb": TrackerKind(require_wandb, _wandb, _wandb_next_step),
}


def discard_tracked(run_dir: Path) -> None:
    """What every tracker wrote into ``run_dir``, which starts anew: whichever trackers its earlier run used."""
    for kind in TRACKERS.values():
        if kind.discard is not None:
            kind.discard(Path(run_dir))


def require_loggers(configs: list[ExperimentConfig]) -> None:
    """Fail before any run starts when a tracker's package is missing (one line naming the install)."""
    for name in sorted({name for config in configs for name in config.train.log}):
        TRACKERS[name].require()


class RunLoggers:
    """The trackers of one run, fed together."""

    def __init__(self, loggers: list[Tracker]):
        self.loggers = loggers

    def epoch(self, row: dict) -> None:
        for logger in self.loggers:
            logger.epoch(row)

    def finish(self, config: ExperimentConfig, result: dict, test_logits: np.ndarray, test_labels: np.ndarray) -> None:
        for logger in self.loggers:
            logger.finish(config, result, test_logits, test_labels)


def open_loggers(config: ExperimentConfig, run_dir: Path, done_rows: list[dict], labels: RunLabels | None,
                 out_dir: Path | None) -> RunLoggers:
    """The trackers ``config.train.log`` names, opened for ``run_dir`` with the metric rows it already holds
    (a resumed run); stores default to ``out_dir`` (the folder above the run directory when None)."""
    labels = labels or run_labels(config)
    out = Path(out_dir) if out_dir is not None else Path(run_dir).parent
    return RunLoggers([TRACKERS[name].open(config, Path(run_dir), done_rows, labels, out)
                       for name in config.train.log])


def finish_sweep_trackers(config: ExperimentConfig, out_dir: Path) -> None:
    """What each tracker of a finished sweep closes (MLflow's parent run)."""
    for name in config.train.log:
        if TRACKERS[name].finish_sweep is not None:
            TRACKERS[name].finish_sweep(config, Path(out_dir))


def next_steps(config: ExperimentConfig, folder: str, out_dir: str | Path) -> list[str]:
    """The lines that say where to look at the runs in each tracker ``config.train.log`` names."""
    return [TRACKERS[name].next_step(folder, Path(out_dir)) for name in config.train.log]
