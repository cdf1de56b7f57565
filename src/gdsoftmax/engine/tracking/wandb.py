"""Weights & Biases tracking: ``train.log = ["wandb"]`` mirrors each run into W&B.

* **Offline by default:** ``WANDB_MODE`` decides (``offline`` unless it is set), so a run needs no account and no
  network; ``wandb sync OUT/wandb/offline-run-*`` uploads the runs later. Every file W&B writes lies in
  ``OUT/wandb`` (the ``--out`` folder), never in the working directory.
* **Runs:** the project is the sweep's name, each cell one run named after the cell, grouped by its setting (the
  group a setting's seeds share) and tagged with each swept key's value (``seed`` among them); the config is the
  resolved config, swept keys first, β as a number or a schedule's label (:mod:`gdsoftmax.engine.tracking.labels`).
* **Metrics:** every numeric field of each metric row at its epoch as the step, as ``metrics.jsonl`` holds it; at
  the end the final test accuracy, ECE and MCE in the run's summary.
* **Resume, as MLflow:** a run's W&B id is derived from its run directory and its identity (the fingerprint of
  ``run.json``). A resumed run continues that id (an offline resume is a second file of the same id, which
  ``wandb sync`` joins) and logs only the epochs it trains; a run directory that starts anew, or holds another
  config, discards the W&B runs it had.
* **Failure:** a W&B error costs one line on stderr; the run trains on and keeps its own files, without W&B.

Needs the ``wandb`` package (``pip install 'gdsoftmax[wandb]'``).
"""

from __future__ import annotations

import hashlib
import math
import os
import shutil
import sys
import time
from pathlib import Path

import numpy as np
import torch

from gdsoftmax.analysis.binned import ECE_BINS, reliability
from gdsoftmax.analysis.files import atomic_write_bytes
from gdsoftmax.engine.config.schema import ExperimentConfig
from gdsoftmax.engine.tracking.labels import RunLabels, tracked_params

__all__ = ["WANDB_DIR", "WandbLog", "require_wandb", "wandb_id"]

WANDB_DIR = "wandb"  # in the --out folder; W&B makes its own wandb/ inside the dir it is given
IDS_DIR = "gdsoftmax-ids"  # one file per run directory: the W&B id it logged under last


def _wandb():
    try:
        import wandb
    except ImportError as error:  # an optional extra: one line that names the fix
        raise ValueError("train.log = ['wandb'] needs the wandb package, which cannot be imported here "
                         f"({error}): pip install 'gdsoftmax[wandb]'") from error
    return wandb


def require_wandb() -> None:
    """Fail before a run starts (and writes anything) when W&B logging cannot work."""
    _wandb()


def wandb_id(run_dir: str | Path, fingerprint: str) -> str:
    """The W&B run id of a run directory holding the run of ``fingerprint`` (letters and digits, as W&B wants).

    >>> wandb_id("runs/a", "f00d") == wandb_id("runs/a", "f00d") != wandb_id("runs/a", "beef")
    True
    """
    return hashlib.sha256(f"{Path(run_dir).resolve()}|{fingerprint}".encode()).hexdigest()[:16]


class WandbLog:
    """The W&B mirror of one run directory's metric rows (see the module docstring)."""

    def __init__(self, run_dir: str | Path, labels: RunLabels, out_dir: str | Path, fingerprint: str,
                 config: ExperimentConfig, resumed: bool = False):
        self.run_dir, self.labels = Path(run_dir).resolve(), labels
        self.root = Path(out_dir).resolve() / WANDB_DIR
        self.id, self.run = wandb_id(self.run_dir, fingerprint), None
        self._safely("open the run", self._open, config, resumed)

    def _safely(self, what: str, action, *args):
        if self.run is None and action != self._open:
            return None
        try:
            return action(*args)
        except Exception as error:  # any failure of W&B: the run goes on without it
            print(f"W&B: cannot {what} ({type(error).__name__}: {str(error).splitlines()[0][:200]}); the run goes "
                  "on and keeps its own files, without W&B", file=sys.stderr)
            self.run = None
            return None

    def _open(self, config: ExperimentConfig, resumed: bool) -> None:
        marker = self.root / IDS_DIR / hashlib.sha256(str(self.run_dir).encode()).hexdigest()[:16]
        previous = marker.read_text().strip() if marker.is_file() else None
        stale = {self.id} if not resumed else set()  # a run trained anew: its own earlier W&B runs go
        if previous and previous != self.id:  # the directory held a run of another config: its W&B runs go
            stale.add(previous)
        # W&B names an offline run's folder by the second it starts and its id: a run of this id opened within the
        # same second as the last one would write into that folder, replacing its file, or (on --restart) into the
        # folder just removed, while W&B may still be closing it; so it waits out that second. Checked before the
        # removal below, so that a restarted run's own removed folders count.
        mine = (self.root / "wandb").glob(f"*-{self.id}")
        recent = any(time.time() - folder.stat().st_mtime < 1.5 for folder in mine)
        for old in stale:
            for folder in (self.root / "wandb").glob(f"*-{old}"):
                shutil.rmtree(folder, ignore_errors=True)
        marker.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_bytes(marker, self.id.encode())
        if recent:
            time.sleep(1.5)
        wandb = _wandb()
        self.run = wandb.init(
            project=self.labels.sweep, name=self.labels.cell, group=self.labels.setting, id=self.id,
            dir=str(self.root), mode=os.environ.get("WANDB_MODE", "offline"), resume="allow", reinit="create_new",
            config=tracked_params(config, self.labels), tags=[f"{k}={v}" for k, v in self.labels.swept.items()],
            settings=wandb.Settings(silent=True, console="off", save_code=False, disable_git=True))

    def epoch(self, row: dict) -> None:
        """Log one metric row at its epoch."""
        values = {field: float(value) for field, value in row.items()
                  if field not in ("epoch", "step") and not isinstance(value, bool)
                  and isinstance(value, int | float) and math.isfinite(value)}
        self._safely("log epoch metrics", lambda: self.run.log(values, step=row["epoch"]))

    def finish(self, config: ExperimentConfig, result: dict, test_logits: np.ndarray, test_labels: np.ndarray,
               n_bins: int = ECE_BINS) -> None:
        """The final metrics in the run's summary; the run finished."""
        self._safely("finish the run", self._finish, result, test_logits, test_labels, n_bins)

    def _finish(self, result, test_logits, test_labels, n_bins) -> None:
        if test_logits is not None:
            report = reliability(torch.from_numpy(test_logits).double(), torch.from_numpy(test_labels), n_bins)
            self.run.summary.update({"final/test_acc": report.accuracy, f"final/test_ece_{n_bins}bins": report.ece,
                                     "final/test_mce": report.mce, "final/epochs": result["epochs"]})
        self.close()

    def close(self) -> None:
        if self.run is not None:
            self.run.finish()
            self.run = None
