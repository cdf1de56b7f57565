"""The trainer's writer of a run directory: claim, lock, open, append, finish.

Crash rules: each epoch appends its row first and then replaces the checkpoint, so a crash in
between re-runs that epoch; opening a run for resumption drops the rows written after its
checkpoint, so rows are never duplicated. ``result.json`` is written last.

Identity: a run directory belongs to one config. Resuming it with another config (other than a
larger ``train.epochs``, or where the data lives and which device trains) stops with
:class:`~gdsoftmax.engine.rundir.records.RunMismatchError` naming the keys that differ; asking for
fewer epochs than it has done is refused too. Only one process writes a run at a time
(:meth:`RunWriter.lock`).

>>> import tempfile
>>> run = RunWriter(tempfile.mkdtemp())
>>> run.is_finished, run.checkpoint() is None
(False, True)
"""

from __future__ import annotations

import contextlib
import io
import os
import time
from pathlib import Path

import numpy as np

from gdsoftmax.analysis.files import atomic_write_bytes
from gdsoftmax.engine.config.schema import ExperimentConfig, config_to_toml
from gdsoftmax.engine.rundir.checkpoint import save_checkpoint
from gdsoftmax.engine.rundir.pidlock import hold_lock
from gdsoftmax.engine.rundir.records import (
    CHECKPOINT_FILE,
    CONFIG_FILE,
    FAILURE_FILE,
    IDENTITY_FILE,
    LOCK_FILE,
    METRICS_FILE,
    PREDICTIONS_FILE,
    PREVIOUS_FILE,
    RESULT_FILE,
    RUN_FILES,
    SAMPLES_FILE,
    Checkpoint,
    EpochRow,
    RunLockedError,
    RunMismatchError,
    RunResult,
    fingerprint,
    identity,
    to_json,
)
from gdsoftmax.engine.rundir.view import RunView

__all__ = ["RunWriter"]


class RunWriter(RunView):
    """One run's folder, for the process that trains it; it reads as
    :class:`~gdsoftmax.engine.rundir.view.RunView` does."""

    # ---- identity and exclusive writing
    def claim(self, config: ExperimentConfig) -> None:
        """Check that this directory is new or holds a run of ``config``; raise
        :class:`RunMismatchError` naming what differs and the way out (see :meth:`RunView.mismatch`)."""
        why = self.mismatch(config)
        if why is not None:
            raise RunMismatchError(why)

    def restart(self) -> None:
        """Delete this run's files (nothing else in the folder), so that it starts anew; what trackers kept in
        the folder is theirs to discard (:func:`gdsoftmax.engine.tracking.registry.discard_tracked`). Call it
        holding :meth:`lock`, so that a run another process writes is never touched."""
        for name in (*RUN_FILES, FAILURE_FILE):
            (self.path / name).unlink(missing_ok=True)

    @contextlib.contextmanager
    def lock(self):
        """Hold the run's lock file while writing; a second writer stops with RunLockedError. A lock left
        by a process that no longer runs on this host is taken over."""
        self.path.mkdir(parents=True, exist_ok=True)
        with hold_lock(self.path / LOCK_FILE, lambda holder, path: _locked(self.path, holder, path)):
            yield self

    # ---- writing, in the order a run does it
    def open(self, config: ExperimentConfig, start_epoch: int, rows: list[dict] | None = None,
             precision: str | None = None, data: str | None = None) -> None:
        """Write the resolved config, the identity (with the precision the run trains in and the data's
        fingerprint, :meth:`~gdsoftmax.engine.data.images.Dataset.fingerprint`) and the metric
        rows up to the checkpoint being resumed: ``rows`` (the checkpoint's own copy, which restores a
        line lost from metrics.jsonl) or, for a checkpoint from before checkpoints carried rows, the
        file's rows up to ``start_epoch``."""
        self.path.mkdir(parents=True, exist_ok=True)
        ident, lengths = identity(config), self.extended_from()
        before = self.config().train.epochs if start_epoch and (self.path / CONFIG_FILE).exists() else None
        if before is not None and before != config.train.epochs:
            lengths = [*lengths, before]  # an extension: the directory says so
        record = {"fingerprint": fingerprint(ident), "identity": ident,
                  "precision": precision or config.train.precision, **({"data": data} if data else {}),
                  **({"extended_from": lengths} if lengths else {})}
        atomic_write_bytes(self.path / IDENTITY_FILE, to_json(record, indent=1, default=str).encode())
        atomic_write_bytes(self.path / CONFIG_FILE, config_to_toml(config).encode())
        if start_epoch < config.train.epochs:  # a result from a shorter run of this config no longer holds
            (self.path / RESULT_FILE).unlink(missing_ok=True)
        kept = [EpochRow.from_dict(r) for r in rows] if rows else self.rows(up_to=start_epoch)
        atomic_write_bytes(self.path / METRICS_FILE, "".join(to_json(r.as_dict()) + "\n" for r in kept).encode())

    def append(self, row: EpochRow, checkpoint: Checkpoint, keep_previous: bool = False) -> None:
        """The row first, then the checkpoint (see the crash rules above). With ``keep_previous`` the
        checkpoint it replaces stays as checkpoint.prev.pt: runs trained stacked write their checkpoints
        one after another, and a cut between two of them is undone by going back one epoch."""
        with open(self.path / METRICS_FILE, "a") as handle:
            handle.write(to_json(row.as_dict()) + "\n")
            handle.flush()
            os.fsync(handle.fileno())
        current = self.path / CHECKPOINT_FILE
        if keep_previous and current.exists():
            os.replace(current, self.path / PREVIOUS_FILE)  # atomic; a cut now leaves the previous one
        save_checkpoint(current, checkpoint.to_state())

    def finish(self, config: ExperimentConfig, records: dict[int, dict], train_labels: np.ndarray,
               predictions: dict[str, np.ndarray], stacked_runs: int = 1, compiled_graphs: int | None = None) -> dict:
        """Write samples.npz, predictions.npz and, last, result.json; return the result."""
        result = RunResult.from_rows(config, self.rows(up_to=config.train.epochs), stacked_runs, compiled_graphs,
                                     self.recorded_precision())
        _save_samples(self.path / SAMPLES_FILE, records, train_labels)
        _save_npz(self.path / PREDICTIONS_FILE, **predictions)
        atomic_write_bytes(self.path / RESULT_FILE, to_json(result.as_dict(), indent=2).encode())
        (self.path / PREVIOUS_FILE).unlink(missing_ok=True)  # a finished run needs no way back
        (self.path / FAILURE_FILE).unlink(missing_ok=True)
        return result.as_dict()

    def record_failure(self, message: str) -> None:
        """Note why an attempt stopped with an error, for ``gdsoftmax sweep --status``."""
        self.path.mkdir(parents=True, exist_ok=True)
        atomic_write_bytes(self.path / FAILURE_FILE, message.encode())


def _locked(run: Path, holder: dict, lock: Path) -> RunLockedError:
    since = time.strftime("%Y-%m-%d %H:%M", time.localtime(holder["since"]))
    return RunLockedError(f"{run} is being written by process {holder['pid']} on {holder['host']} (since {since}); "
                          f"wait for it to end, or delete {lock} if that process is gone")


def _save_samples(path: Path, records: dict[int, dict], train_labels: np.ndarray) -> None:
    epochs = sorted(records)
    _save_npz(path, epochs=np.array(epochs), p_true=np.stack([records[e]["p_true"].numpy() for e in epochs]),
              correct=np.stack([records[e]["correct"].numpy() for e in epochs]), labels=train_labels)


def _save_npz(path: Path, **arrays) -> None:
    buffer = io.BytesIO()
    np.savez_compressed(buffer, **arrays)
    atomic_write_bytes(path, buffer.getvalue())
