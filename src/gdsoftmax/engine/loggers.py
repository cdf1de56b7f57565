"""The trackers a run mirrors its metric rows into (``train.log``): TensorBoard and MLflow.

``metrics.jsonl`` stays the source of truth; each logger is fed a row after the row is written,
and the final predictions once the run finishes. Only the main process logs.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from gdsoftmax.engine.config import ExperimentConfig
from gdsoftmax.engine.mlflow_log import MLflowLog, require_mlflow
from gdsoftmax.engine.rundir.view import RunView
from gdsoftmax.engine.tensorboard import TensorBoardLog, require_tensorboard
from gdsoftmax.engine.tracking import RunLabels, run_labels

__all__ = ["RunLoggers", "open_loggers", "require_loggers"]


def require_loggers(configs: list[ExperimentConfig]) -> None:
    """Fail before any run starts when a logger's package is missing (one line naming the install)."""
    wanted = {name for config in configs for name in config.train.log}
    if "tensorboard" in wanted:
        require_tensorboard()
    if "mlflow" in wanted:
        require_mlflow()


class RunLoggers:
    """The loggers of one run, fed together."""

    def __init__(self, loggers: list):
        self.loggers = loggers

    def epoch(self, row: dict) -> None:
        for logger in self.loggers:
            logger.epoch(row)

    def finish(self, config: ExperimentConfig, result: dict, test_logits: np.ndarray, test_labels: np.ndarray) -> None:
        for logger in self.loggers:
            logger.finish(config, result, test_logits, test_labels)


def open_loggers(config: ExperimentConfig, run_dir: Path, done_rows: list[dict], labels: RunLabels | None,
                 out_dir: Path | None) -> RunLoggers:
    """The loggers ``config.train.log`` names, opened for ``run_dir`` with the metric rows it already holds
    (a resumed run); MLflow's store defaults to ``out_dir`` (the folder above the run directory when None)."""
    labels = labels or run_labels(config)
    loggers = []
    if "tensorboard" in config.train.log:  # drops the events of later epochs, which the run trains again
        loggers.append(TensorBoardLog(run_dir, len(done_rows), labels))
    if "mlflow" in config.train.log:
        mlflow_log = MLflowLog(run_dir, labels, out_dir or Path(run_dir).parent, RunView(run_dir).fingerprint(),
                               resumed=bool(done_rows))
        mlflow_log.params(config)
        for row in done_rows:  # a kill between a row's write and its logging left the store behind: catch up
            mlflow_log.epoch(row)
        loggers.append(mlflow_log)
    return RunLoggers(loggers)
