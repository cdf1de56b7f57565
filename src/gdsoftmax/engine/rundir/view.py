"""The read-only view of a run directory: what studies, reports and status commands read.

A :class:`RunView` never creates, locks or changes a file, so a report cannot disturb a run that is
still being written. The trainer's :class:`~gdsoftmax.engine.rundir.writer.RunWriter` extends it.

>>> import tempfile
>>> run = RunView(tempfile.mkdtemp())
>>> run.is_finished, run.rows(), run.failure()
(False, [], None)
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from gdsoftmax.engine.config.schema import ExperimentConfig, load_config
from gdsoftmax.engine.recipe.lr import schedule_changes
from gdsoftmax.engine.rundir.checkpoint import load_checkpoint
from gdsoftmax.engine.rundir.pidlock import is_stale, read_lock
from gdsoftmax.engine.rundir.records import (
    CHECKPOINT_FILE,
    CONFIG_FILE,
    FAILURE_FILE,
    FEATURES_FILE,
    IDENTITY_FILE,
    LOCK_FILE,
    METRICS_FILE,
    PREDICTIONS_FILE,
    PREVIOUS_FILE,
    RESULT_FILE,
    SAMPLES_FILE,
    Checkpoint,
    EpochRow,
    RunRecord,
    checked_result,
    identity,
    identity_differences,
    read_or_explain,
)

__all__ = ["WAY_OUT", "RunProgress", "RunView", "differences_shown", "failed_runs", "finished_runs", "mismatch"]

WAY_OUT = "Use another --out, or --restart to discard that run"


class RunProgress:
    """What a run directory says about its training: the identity it records, its checkpoints, the
    process writing it, the error of its last attempt. Read only."""

    def __init__(self, path: str | Path):
        self.path = Path(path)

    def config(self) -> ExperimentConfig:
        """The resolved config the run was trained with."""
        return read_or_explain(self.path / CONFIG_FILE, load_config)

    def identity(self) -> dict | None:
        """The recorded identity (run.json; from config.toml for runs older than run.json), None for a new folder."""
        if (self.path / IDENTITY_FILE).exists():
            return read_or_explain(self.path / IDENTITY_FILE, lambda p: json.loads(p.read_text())["identity"])
        if (self.path / CONFIG_FILE).exists():
            return identity(self.config())
        return None

    def mismatch(self, config: ExperimentConfig) -> str | None:
        """Why this directory cannot hold a run of ``config``, or None when it can (see :func:`mismatch`)."""
        return mismatch(self, config)

    def extended_from(self) -> list[int]:
        """The lengths (train.epochs) this run had before it was extended; empty for a run trained at one length."""
        return self._identity_record().get("extended_from", [])

    def recorded_precision(self) -> str | None:
        """The precision the run trains in, recorded when it started (``"auto"`` resolved); None before."""
        return self._identity_record().get("precision")

    def fingerprint(self) -> str:
        """The fingerprint of the identity recorded in run.json ("" before the run was opened): trackers tag
        their runs with it, so a tracker run is continued only by the run it mirrors."""
        return str(self._identity_record().get("fingerprint", ""))

    def recorded_data(self) -> str | None:
        """The fingerprint of the data the run started on (run.json); None before, or for older runs."""
        return self._identity_record().get("data")

    def _identity_record(self) -> dict:
        path = self.path / IDENTITY_FILE
        return read_or_explain(path, lambda p: json.loads(p.read_text())) if path.exists() else {}

    def failure(self) -> str | None:
        """The error of the last failed attempt (None if none, or once the run finished)."""
        path = self.path / FAILURE_FILE
        return path.read_text(errors="replace") if path.exists() else None

    def writer(self) -> dict | None:
        """The process holding the run's lock (pid, host, since), or None when no live process does."""
        holder = read_lock(self.path / LOCK_FILE)
        return None if holder is None or is_stale(holder) else holder

    def checkpoint(self, map_location="cpu", epoch: int | None = None) -> Checkpoint | None:
        """The newest checkpoint, or the one of ``epoch`` (the current or the previous one); None if absent."""
        for path in (self.path / CHECKPOINT_FILE, self.path / PREVIOUS_FILE):
            checkpoint = _load_checkpoint(path, map_location) if path.exists() else None
            if checkpoint is not None and (epoch is None or checkpoint.epoch == epoch):
                return checkpoint
        return None

    def checkpoint_epochs(self) -> tuple[int, int | None]:
        """The newest checkpoint's epoch (0 without one) and the previous one's (None without one)."""
        epochs = [_epoch_of(self.path / n) if (self.path / n).exists() else None
                  for n in (CHECKPOINT_FILE, PREVIOUS_FILE)]
        if epochs[0] is None:  # cut between keeping the previous one and writing the new one
            return epochs[1] or 0, None
        return epochs[0], epochs[1]

    def checkpoint_epoch(self) -> int:
        """The epoch the newest checkpoint holds (0 without one); raises if it cannot be read."""
        return self.checkpoint_epochs()[0]


class RunView(RunProgress):
    """One run's folder, read only: its progress (:class:`RunProgress`) and what it produced. A file
    that cannot be parsed raises :class:`~gdsoftmax.engine.rundir.records.DamagedRunError` naming it."""

    @property
    def is_finished(self) -> bool:
        return (self.path / RESULT_FILE).exists()

    def rows(self, up_to: int | None = None) -> list[EpochRow]:
        """Rows with epoch <= ``up_to`` (all without it); a torn last line from a crash is skipped."""
        path = self.path / METRICS_FILE
        rows = _parse_rows(path.read_text().splitlines()) if path.exists() else []
        return [row for row in rows if up_to is None or row.epoch <= up_to]

    def result(self) -> dict:
        """result.json as a dict (see :class:`~gdsoftmax.engine.rundir.records.RunResult`); one without
        the fields every reader uses, or with values of the wrong type, is damaged."""
        return read_or_explain(self.path / RESULT_FILE, lambda p: checked_result(json.loads(p.read_text())))

    def samples(self) -> dict[str, np.ndarray]:
        """samples.npz: ``epochs``, per-sample ``p_true`` and ``correct`` at those epochs, ``labels``."""
        return read_or_explain(self.path / SAMPLES_FILE, _npz)

    def predictions(self) -> dict[str, np.ndarray]:
        """predictions.npz: final validation and test logits and labels (and 2-D features if any)."""
        return read_or_explain(self.path / PREDICTIONS_FILE, _npz)

    def features(self) -> dict | None:
        """The final model's feature geometry (NC1, ...) if it was measured (``gdsoftmax.engine.tasks.features``)."""
        path = self.path / FEATURES_FILE
        return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else None

    def read(self) -> RunRecord:
        """A finished run: config, rows, per-sample records, predictions and result."""
        return RunRecord(self.path, self.config(), self.rows(), self.samples(), self.predictions(), self.result())


def mismatch(run: RunProgress, config: ExperimentConfig) -> str | None:
    """Why ``run``'s directory cannot hold a run of ``config``, or None when it can: the sweep, the
    launcher and ``--status`` all ask this one question. A run of another config (its recorded
    identity differs), one that trained more epochs than asked for, and one whose learning-rate
    schedule over the epochs it trained would change if it were extended, are refused."""
    recorded = run.identity()
    differ = [] if recorded is None else identity_differences(recorded, identity(config))
    if differ:
        return f"{run.path} holds a run of another config: {differences_shown(differ)}. {WAY_OUT}"
    done = run.checkpoint_epoch()
    if done > config.train.epochs:
        return f"{run.path} has trained {done} epochs, more than train.epochs = {config.train.epochs}. {WAY_OUT}"
    trained = run.config() if done and (run.path / CONFIG_FILE).exists() else None
    changed = [] if trained is None else schedule_changes(trained, config, done)
    if changed:
        why = {"cosine": "its cosine learning-rate schedule spans the whole of train.epochs",
               "step": "its lr milestones are fractions of train.epochs"}.get(
                   trained.train.lr_schedule, "its learning-rate schedule changed")
        return (f"{run.path} trained {done} epochs under train.epochs = {trained.train.epochs}, and {why}: "
                f"{config.train.epochs} epochs would change the lr of epochs it already trained (from epoch "
                f"{changed[0]}). {WAY_OUT}")
    return None


def differences_shown(differ: list[str], most: int = 4) -> str:
    """The first ``most`` of :func:`~gdsoftmax.engine.rundir.records.identity_differences`, and how many more.

    >>> differences_shown(["a (1 there, 2 now)", "b (x there, y now)"], most=1)
    'a (1 there, 2 now) and 1 more'
    """
    return ", ".join(differ[:most]) + (f" and {len(differ) - most} more" if len(differ) > most else "")


def _load_checkpoint(path: Path, map_location) -> Checkpoint:
    return read_or_explain(path, lambda p: Checkpoint.from_state(load_checkpoint(p, map_location=map_location)))


def _parse_rows(lines: list[str]) -> list[EpochRow]:
    rows = []
    for line in lines:
        try:
            rows.append(EpochRow.from_dict(json.loads(line)))
        except (json.JSONDecodeError, KeyError, TypeError):
            continue
    return rows


def _epoch_of(path: Path) -> int:
    # mapped, not read: resuming and sweep planning ask for epochs often, and weights can be large
    return read_or_explain(path, lambda p: int(load_checkpoint(p, mmap=True)["epoch"]))


def _npz(path: Path) -> dict:
    with np.load(path, allow_pickle=False) as arrays:
        return {k: arrays[k] for k in arrays.files}


def finished_runs(sweep_dir: str | Path) -> list[RunView]:
    """The finished runs directly below ``sweep_dir``, in name order."""
    return [RunView(done.parent) for done in sorted(Path(sweep_dir).glob(f"*/{RESULT_FILE}"))]


def failed_runs(sweep_dir: str | Path) -> list[RunView]:
    """The runs directly below ``sweep_dir`` whose last attempt stopped with an error, in name order."""
    runs = [RunView(path) for path in sorted(Path(sweep_dir).iterdir()) if path.is_dir()]
    return [run for run in runs if not run.is_finished and run.failure() is not None]
