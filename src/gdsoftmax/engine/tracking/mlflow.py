"""MLflow tracking: ``train.log = ["mlflow"]`` mirrors each run into an MLflow tracking store.

* **Store:** ``MLFLOW_TRACKING_URI`` when it is set; otherwise a SQLite database, ``mlflow.db``, in the
  ``--out`` folder (a real database that needs no server), its artifacts beside it in ``mlartifacts/``:
  ``mlflow ui --backend-store-uri sqlite:///runs/mlflow.db`` shows it. Nothing is written outside ``--out``.
* **Runs:** the experiment is the sweep's name; each cell is one MLflow run named after the cell, under
  a parent run named after the sweep. Tags: ``setting`` (the group a setting's seeds share) and each
  swept key with its value (``seed`` among them), so the UI groups and filters by them. Params: the
  resolved config, swept keys first, β as a number or a schedule's label (see
  :mod:`gdsoftmax.engine.tracking.labels`).
* **Metrics:** every numeric field of each metric row at its epoch as the step, as ``metrics.jsonl``
  holds it; at the end the final test accuracy, ECE (10 bins) and MCE. **Artifacts:** the test set's
  reliability diagram and the run's ``config.toml``.
* **Resume:** a resumed run finds its MLflow run by the run directory and the run's identity (tags, the
  fingerprint of ``run.json``) and continues it; epochs the store already holds are not logged again, so no
  step appears twice. A run directory that starts anew (``--restart``, or a run that never wrote a
  checkpoint) discards the MLflow run it had, so the store never mixes two runs under one name.
* **Failure:** a store that cannot be reached costs one line on stderr; the run trains on and keeps its
  own files, without MLflow. HTTP stores are tried with 2 retries and a 10-second timeout unless
  ``MLFLOW_HTTP_REQUEST_MAX_RETRIES`` / ``MLFLOW_HTTP_REQUEST_TIMEOUT`` say otherwise.

Needs the ``mlflow`` package (``pip install 'gdsoftmax[mlflow]'``).
"""

from __future__ import annotations

import math
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path
from urllib.parse import unquote, urlparse

import numpy as np
import torch

from gdsoftmax.analysis import plots
from gdsoftmax.analysis.binned import ECE_BINS, reliability
from gdsoftmax.engine.config.schema import ExperimentConfig
from gdsoftmax.engine.rundir.records import CONFIG_FILE
from gdsoftmax.engine.tracking.labels import RunLabels, tracked_params

__all__ = ["ARTIFACTS_DIR", "TRACKING_DB", "MLflowLog", "artifact_location", "finish_sweep", "require_mlflow",
           "sqlite_problem", "tracking_uri"]

TRACKING_DB, ARTIFACTS_DIR = "mlflow.db", "mlartifacts"
RUN_DIR_TAG, ROLE_TAG, IDENTITY_TAG = "gdsoftmax.run_dir", "gdsoftmax.role", "gdsoftmax.fingerprint"
STEP_METRIC = "train_loss"  # every row has it, finite (a diverged epoch writes no row): the last step logged


def _mlflow():
    try:
        import mlflow
        from mlflow.tracking import MlflowClient
    except ImportError as error:  # an optional extra: one line that names the fix
        raise ValueError("train.log = ['mlflow'] needs the mlflow package, which cannot be imported here "
                         f"({error}): pip install 'gdsoftmax[mlflow]'") from error
    return mlflow, MlflowClient


def require_mlflow() -> None:
    """Fail before a run starts (and writes anything) when MLflow logging cannot work."""
    _mlflow()


def tracking_uri(out_dir: str | Path) -> str:
    """``MLFLOW_TRACKING_URI``, or the SQLite database ``mlflow.db`` in ``out_dir``."""
    return os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{(Path(out_dir) / TRACKING_DB).resolve()}"


def artifact_location(out_dir: str | Path) -> str | None:
    """Where a new experiment keeps its artifacts: ``mlartifacts/`` beside the default store in ``out_dir``
    (None under ``MLFLOW_TRACKING_URI``: that server's own default)."""
    if os.environ.get("MLFLOW_TRACKING_URI"):
        return None
    return (Path(out_dir) / ARTIFACTS_DIR).resolve().as_uri()


def sqlite_problem(uri: str) -> str | None:
    """Why a ``sqlite:///`` store cannot be written, checked before MLflow retries for minutes; None if it can."""
    if not uri.startswith("sqlite:///"):
        return None
    path = Path(uri.removeprefix("sqlite:///"))
    if path.is_dir():
        return f"{path} is a folder, not a database file"
    if not path.parent.is_dir():
        return f"the folder {path.parent} does not exist"
    if path.exists() and path.stat().st_size and path.read_bytes()[:16] != b"SQLite format 3\x00":
        return f"{path} is not an SQLite database"
    if not os.access(path if path.exists() else path.parent, os.W_OK):
        return f"{path if path.exists() else path.parent} is not writable"
    return None


class MLflowLog:
    """The MLflow mirror of one run directory's metric rows (see the module docstring)."""

    def __init__(self, run_dir: str | Path, labels: RunLabels, out_dir: str | Path, fingerprint: str = "",
                 resumed: bool = False):
        os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "2")  # an unreachable server: seconds, not minutes
        os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "10")
        self.run_dir, self.labels, self.uri = Path(run_dir).resolve(), labels, tracking_uri(out_dir)
        self.artifacts, self.fingerprint, self.resumed = artifact_location(out_dir), fingerprint, resumed
        self.client, self.run_id, self.last_step = None, None, 0
        self._safely("open the run", self._open)

    def _safely(self, what: str, action, *args):
        if self.client is None and action != self._open:
            return None
        try:
            return action(*args)
        except Exception as error:  # any failure of the store: the run goes on without it
            print(f"MLflow: cannot {what} at {self.uri} ({type(error).__name__}: {str(error).splitlines()[0][:200]}); "
                  "the run goes on and keeps its own files, without MLflow", file=sys.stderr)
            self.client = None
            return None

    def _open(self) -> None:
        problem = sqlite_problem(self.uri)
        if problem is not None:
            raise OSError(problem)
        _, client_class = _mlflow()
        client = client_class(self.uri)
        experiment = client.get_experiment_by_name(self.labels.sweep)
        experiment_id = experiment.experiment_id if experiment else client.create_experiment(
            self.labels.sweep, artifact_location=self.artifacts)
        found = client.search_runs([experiment_id], f"tags.`{RUN_DIR_TAG}` = '{self.run_dir}'")
        same = [r for r in found if self.resumed and r.data.tags.get(IDENTITY_TAG) == self.fingerprint]
        for other in found:  # a run directory trained anew, or another run's: its old MLflow run goes
            if other not in same[:1]:
                self._discard(client, other)
        if same:  # a resumed run continues its MLflow run
            self.run_id = same[0].info.run_id
            history = client.get_metric_history(self.run_id, STEP_METRIC)
            self.last_step = max((m.step for m in history), default=0)
            client.update_run(self.run_id, status="RUNNING")
        else:
            tags = {RUN_DIR_TAG: str(self.run_dir), IDENTITY_TAG: self.fingerprint, "setting": self.labels.setting,
                    **{key: str(value) for key, value in self.labels.swept.items()}}
            if self.labels.sweep != self.labels.cell:
                tags["mlflow.parentRunId"] = self._parent(client, experiment_id)
            self.run_id = client.create_run(experiment_id, run_name=self.labels.cell, tags=tags).info.run_id
        self.client = client

    def _discard(self, client, run) -> None:
        """Delete an MLflow run, and its artifacts where they lie in this out folder's ``mlartifacts/``."""
        client.delete_run(run.info.run_id)
        if self.artifacts and run.info.artifact_uri.startswith(self.artifacts + "/"):
            folder = Path(unquote(urlparse(run.info.artifact_uri).path)).parent  # .../EXPERIMENT/RUN_ID/artifacts
            shutil.rmtree(folder, ignore_errors=True)

    def _parent(self, client, experiment_id: str) -> str:
        """The sweep's parent run: found by its tag, or created the first time a cell of the sweep logs."""
        found = client.search_runs([experiment_id], f"tags.`{ROLE_TAG}` = 'sweep'", max_results=1)
        if found:
            return found[0].info.run_id
        return client.create_run(experiment_id, run_name=self.labels.sweep, tags={ROLE_TAG: "sweep"}).info.run_id

    def params(self, config: ExperimentConfig) -> None:
        """The resolved config as params (once: a resumed run has them already)."""
        def log():
            from mlflow.entities import Param

            if self.last_step == 0:
                values = tracked_params(config, self.labels)
                self.client.log_batch(self.run_id, params=[Param(k, str(v)[:6000]) for k, v in values.items()])
        self._safely("log the params", log)

    def epoch(self, row: dict) -> None:
        """Log one metric row at its epoch, unless the store holds that epoch already."""
        if row["epoch"] <= self.last_step:
            return
        self._safely("log epoch metrics", self._log_metrics, {
            field: float(value) for field, value in row.items()
            if field not in ("epoch", "step") and not isinstance(value, bool) and isinstance(value, int | float)
            and math.isfinite(value)}, row["epoch"])
        self.last_step = row["epoch"]

    def _log_metrics(self, values: dict, step: int) -> None:
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        self.client.log_batch(self.run_id, metrics=[Metric(k, v, now, step) for k, v in values.items()])

    def finish(self, config: ExperimentConfig, result: dict, test_logits: np.ndarray, test_labels: np.ndarray,
               n_bins: int = ECE_BINS) -> None:
        """The final metrics, the reliability diagram and the config as artifacts; the run marked finished."""
        self._safely("finish the run", self._finish, config, result, test_logits, test_labels, n_bins)

    def _finish(self, config, result, test_logits, test_labels, n_bins) -> None:
        if "final_test_acc" in self.client.get_run(self.run_id).data.metrics:  # a finished run opened again
            self.client.set_terminated(self.run_id, "FINISHED")
            return
        if test_logits is None:  # a language model: its rows hold its validation metrics
            self.client.log_artifact(self.run_id, str(self.run_dir / CONFIG_FILE))
            self.client.set_terminated(self.run_id, "FINISHED")
            return
        report = reliability(torch.from_numpy(test_logits).double(), torch.from_numpy(test_labels), n_bins)
        self._log_metrics({"final_test_acc": report.accuracy, f"final_test_ece_{n_bins}bins": report.ece,
                           "final_test_mce": report.mce}, result["epochs"])
        with tempfile.TemporaryDirectory() as scratch:
            path = plots.reliability_diagrams([(config.name, report.bins, report.ece, report.mce)],
                                              Path(scratch) / "reliability.png",
                                              f"{config.name}: reliability and confidence histogram (test)")
            self.client.log_artifact(self.run_id, str(path))
        self.client.log_artifact(self.run_id, str(self.run_dir / CONFIG_FILE))
        self.client.set_terminated(self.run_id, "FINISHED")


def finish_sweep(config: ExperimentConfig, out_dir: str | Path) -> None:
    """Mark the sweep's parent run finished once every cell has finished (one line on stderr if the store fails)."""
    if "mlflow" not in config.train.log or not config.sweep:
        return
    try:
        _, client_class = _mlflow()
        client = client_class(tracking_uri(out_dir))
        experiment = client.get_experiment_by_name(config.name)
        found = client.search_runs([experiment.experiment_id], f"tags.`{ROLE_TAG}` = 'sweep'", max_results=1)
        if found:
            client.set_terminated(found[0].info.run_id, "FINISHED")
    except Exception as error:  # the cells are logged; only the parent's status is left open
        print(f"MLflow: cannot mark the sweep's parent run finished at {tracking_uri(out_dir)} "
              f"({type(error).__name__})", file=sys.stderr)
