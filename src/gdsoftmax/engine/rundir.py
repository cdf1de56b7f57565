"""The run directory: the one module that names, writes and reads a run's files.

* ``config.toml``      the resolved config (rerun with ``gdsoftmax train run_dir/config.toml``)
* ``metrics.jsonl``    one :class:`EpochRow` per epoch: loss as optimised, plain train CE, accuracies, β, lr, time
* ``checkpoint.pt``    a :class:`Checkpoint`: model, optimizer, epoch, step, every RNG state; written atomically
* ``samples.npz``      per training sample, true-class probability and correctness at chosen epochs
* ``predictions.npz``  final validation and test logits (and 2-D features when the model has them)
* ``result.json``      a :class:`RunResult`; its presence marks the run finished

* ``run.json``         the run's identity: a fingerprint of its resolved config (see :meth:`RunDirectory.claim`)
* ``lock``             while a process writes the run: its pid, host and start time

Crash rules: each epoch appends its row first and then replaces the checkpoint, so a crash in
between re-runs that epoch; opening a run for resumption drops the rows written after its
checkpoint, so rows are never duplicated. ``result.json`` is written last.

Identity: a run directory belongs to one config. Resuming it with another config (other than a
larger ``train.epochs``, or where the data lives and which device trains) stops with
:class:`RunMismatchError` naming the keys that differ; asking for fewer epochs than it has done is
refused too. Only one process writes a run at a time (:meth:`RunDirectory.lock`).

>>> import tempfile
>>> run = RunDirectory(tempfile.mkdtemp())
>>> run.is_finished, run.checkpoint() is None
(False, True)
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import io
import json
import math
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from gdsoftmax.engine.checkpoint import atomic_write_bytes, load_checkpoint, save_checkpoint
from gdsoftmax.engine.config import ExperimentConfig, config_to_toml, load_config, to_dict
from gdsoftmax.engine.pidlock import hold_lock, is_stale, read_lock

__all__ = ["Checkpoint", "DamagedRunError", "EpochRow", "RunDirectory", "RunLockedError", "RunMismatchError",
           "RunRecord", "RunResult", "finished_runs", "identity"]

CONFIG_FILE, METRICS_FILE, CHECKPOINT_FILE = "config.toml", "metrics.jsonl", "checkpoint.pt"
FAILURE_FILE = "failure.txt"  # why the last attempt stopped with an error (cleared when the run finishes)
PREVIOUS_FILE = "checkpoint.prev.pt"  # stacked runs keep the epoch before, to realign after a cut
SAMPLES_FILE, PREDICTIONS_FILE, RESULT_FILE = "samples.npz", "predictions.npz", "result.json"
IDENTITY_FILE, LOCK_FILE = "run.json", "lock"
RUN_FILES = (CONFIG_FILE, METRICS_FILE, CHECKPOINT_FILE, PREVIOUS_FILE, SAMPLES_FILE, PREDICTIONS_FILE, RESULT_FILE,
             IDENTITY_FILE)
# keys that may change when a run is resumed: its length, where the data lives, which device trains it
NOT_IDENTITY = ("train.epochs", "data.data_dir", "data.download", "train.device", "train.log", "launcher", "sweep")


class RunMismatchError(ValueError):
    """The run directory holds a run of another config."""


class RunLockedError(RuntimeError):
    """Another live process is writing the run directory."""


class DamagedRunError(ValueError):
    """A file of the run directory cannot be read; the message names it and the way out."""


def _read(path: Path, reader):
    """``reader(path)``, or DamagedRunError naming the file and what to do."""
    try:
        return reader(path)
    except Exception as error:  # any failure to parse: truncated, overwritten, not ours
        raise DamagedRunError(f"{path} is damaged and cannot be read ({type(error).__name__}: "
                              f"{str(error).splitlines()[0][:100] if str(error) else 'no detail'}); rerun with "
                              "--restart to train this run anew") from error


def identity(config: ExperimentConfig) -> dict[str, object]:
    """The config's keys that define what a run is, flattened to dotted keys."""
    flat = _flatten(to_dict(config))
    return {k: v for k, v in flat.items() if not any(k == n or k.startswith(n + ".") for n in NOT_IDENTITY)}


def _flatten(tree: dict, prefix: str = "") -> dict[str, object]:
    flat = {}
    for key, value in tree.items():
        if isinstance(value, dict) and key not in ("options", "beta"):  # tables that are values, not sections
            flat.update(_flatten(value, f"{prefix}{key}."))
        else:
            flat[prefix + key] = value
    return flat


def _json(value, **options) -> str:
    """Standard JSON: NaN and infinities are written as null (and read back as NaN by the records)."""
    return json.dumps(_finite_or_none(value), allow_nan=False, **options)


def _finite_or_none(value):
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _finite_or_none(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_finite_or_none(v) for v in value]
    return value


def _fingerprint(ident: dict) -> str:
    return hashlib.sha256(json.dumps(ident, sort_keys=True, default=str).encode()).hexdigest()[:16]


@dataclass
class EpochRow:
    """One line of metrics.jsonl; ``extra`` holds optional measurements (e.g. margins)."""

    epoch: int
    step: int
    beta: float | None
    lr: float
    train_loss: float
    train_ce: float
    train_acc: float
    val_ce: float
    val_acc: float
    test_ce: float
    test_acc: float
    wall_time: float
    extra: dict = field(default_factory=dict)

    def as_dict(self) -> dict:
        """The row as written: the named fields, the extras, and wall_time last."""
        row = {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name not in ("extra", "wall_time")}
        return {**row, **self.extra, "wall_time": self.wall_time}

    @classmethod
    def from_dict(cls, row: dict) -> EpochRow:
        names = [f.name for f in dataclasses.fields(cls) if f.name != "extra"]
        values = {n: math.nan if row[n] is None and n not in ("beta",) else row[n] for n in names}  # null: NaN
        return cls(**values, extra={k: v for k, v in row.items() if k not in names})

    def __getitem__(self, key: str):
        return getattr(self, key) if key in self.__dataclass_fields__ and key != "extra" else self.extra[key]


@dataclass
class Checkpoint:
    """Everything a run needs to continue: model and optimizer state, position, RNG states, the
    per-sample records so far and the objective's state (adaptive β)."""

    model: dict
    optimizer: dict
    epoch: int
    step: int
    lr: float
    elapsed: float
    rng: dict
    records: dict[int, dict]
    objective: dict = field(default_factory=lambda: {"lr_factor": 1.0, "controller": {}})
    scaler: dict = field(default_factory=dict)  # the fp16 gradient scaler's state; empty otherwise
    rows: list[dict] = field(default_factory=list)  # every metric row so far: a lost line of metrics.jsonl returns

    def to_state(self) -> dict:
        """Tensors, numbers, strings, lists and dicts only, so ``weights_only=True`` loads it."""
        state = {"model": self.model, "optimizer": self.optimizer, "epoch": self.epoch, "step": self.step,
                 "lr": self.lr, "elapsed": self.elapsed, "rng": self.rng,
                 "records": {str(k): v for k, v in self.records.items()}, **self.objective}
        state = {**state, "rows": self.rows}
        return {**state, "scaler": self.scaler} if self.scaler else state

    @classmethod
    def from_state(cls, state: dict) -> Checkpoint:
        return cls(state["model"], state["optimizer"], int(state["epoch"]), int(state["step"]), float(state["lr"]),
                   float(state["elapsed"]), state["rng"], {int(k): v for k, v in state["records"].items()},
                   {"lr_factor": float(state.get("lr_factor", 1.0)), "controller": state.get("controller", {})},
                   state.get("scaler", {}), list(state.get("rows", [])))


@dataclass
class RunResult:
    """result.json: the last epoch's numbers, the best validation epoch, and how the run trained."""

    name: str
    seed: int
    beta: float | dict | None
    epochs: int
    test_acc: float | None
    test_ce: float | None
    train_ce: float | None
    train_acc: float | None
    best_val_acc: float | None
    best_val_epoch: int | None
    wall_time: float | None
    stacked_runs: int = 1  # > 1: wall_time is that of the whole stack
    compiled_graphs: int | None = None  # with train.compile: graphs torch.compile built during the run

    @classmethod
    def from_rows(cls, config: ExperimentConfig, rows: list[EpochRow], stacked_runs: int = 1,
                  compiled_graphs: int | None = None) -> RunResult:
        last = rows[-1] if rows else None
        best = max(rows, key=lambda r: r.val_acc if not math.isnan(r.val_acc) else -1) if rows else None
        return cls(config.name, config.seed, config.loss.beta.raw, max((r.epoch for r in rows), default=0),
                   *(None if last is None else getattr(last, k) for k in ("test_acc", "test_ce", "train_ce",
                                                                           "train_acc")),
                   None if best is None else best.val_acc, None if best is None else best.epoch,
                   None if last is None else last.wall_time, stacked_runs, compiled_graphs)

    def as_dict(self) -> dict:
        return dataclasses.asdict(self)


@dataclass
class RunRecord:
    """A finished run as the reports read it."""

    path: Path
    config: ExperimentConfig
    rows: list[EpochRow]
    samples: dict
    predictions: dict
    result: dict


class RunDirectory:
    """One run's folder; every read and write of its files goes through here."""

    def __init__(self, path: str | Path):
        self.path = Path(path)

    @property
    def is_finished(self) -> bool:
        return (self.path / RESULT_FILE).exists()

    # ---- identity and exclusive writing
    def claim(self, config: ExperimentConfig) -> None:
        """Check that this directory is new or holds a run of ``config`` (which may ask for more epochs
        than were done); raise :class:`RunMismatchError` naming what differs and the way out."""
        recorded = self._recorded_identity()
        if recorded is not None:
            wanted, defaults = identity(config), identity(ExperimentConfig())
            # a key newer than the recorded run stands at its default there (that version had no other value)
            differ = sorted(k for k in set(recorded) | set(wanted) if recorded.get(k, defaults.get(k)) != wanted.get(k))
            if differ:
                shown = ", ".join(f"{k} ({_short(recorded.get(k, defaults.get(k)))} there, {_short(wanted.get(k))} now)"
                                  for k in differ[:4]) + (f" and {len(differ) - 4} more" if len(differ) > 4 else "")
                raise RunMismatchError(f"{self.path} holds a run of another config: {shown}. Use another --out, "
                                       "or --restart to discard that run")
        done = self.checkpoint_epoch()
        if done > config.train.epochs:
            raise RunMismatchError(f"{self.path} has trained {done} epochs, more than train.epochs = "
                                   f"{config.train.epochs}. Use another --out, or --restart to discard that run")

    def _recorded_identity(self) -> dict | None:
        if (self.path / IDENTITY_FILE).exists():
            return _read(self.path / IDENTITY_FILE, lambda p: json.loads(p.read_text())["identity"])
        if (self.path / CONFIG_FILE).exists():  # a run from before run.json existed
            return identity(_read(self.path / CONFIG_FILE, load_config))
        return None

    def restart(self) -> None:
        """Delete this run's files (and nothing else in the folder), so that it starts anew."""
        for name in RUN_FILES:
            (self.path / name).unlink(missing_ok=True)

    @contextlib.contextmanager
    def lock(self):
        """Hold the run's lock file while writing; a second writer stops with RunLockedError. A lock left
        by a process that no longer runs on this host is taken over."""
        self.path.mkdir(parents=True, exist_ok=True)
        with hold_lock(self.path / LOCK_FILE, lambda holder, path: RunLockedError(
                f"{self.path} is being written by process {holder['pid']} on {holder['host']} (since "
                f"{time.strftime('%Y-%m-%d %H:%M', time.localtime(holder['since']))}); wait for it to end, "
                f"or delete {path} if that process is gone")):
            yield self

    # ---- writing, in the order a run does it
    def open(self, config: ExperimentConfig, start_epoch: int, rows: list[dict] | None = None) -> None:
        """Write the resolved config and the metric rows up to the checkpoint being resumed: ``rows``
        (the checkpoint's own copy, which restores a line lost from metrics.jsonl) or, for a checkpoint
        from before checkpoints carried rows, the file's rows up to ``start_epoch``."""
        self.path.mkdir(parents=True, exist_ok=True)
        ident = identity(config)
        atomic_write_bytes(self.path / IDENTITY_FILE, _json(
            {"fingerprint": _fingerprint(ident), "identity": ident}, indent=1, default=str).encode())
        atomic_write_bytes(self.path / CONFIG_FILE, config_to_toml(config).encode())
        if start_epoch < config.train.epochs:  # a result from a shorter run of this config no longer holds
            (self.path / RESULT_FILE).unlink(missing_ok=True)
        kept = [EpochRow.from_dict(r) for r in rows] if rows else self.rows(up_to=start_epoch)
        atomic_write_bytes(self.path / METRICS_FILE, "".join(_json(r.as_dict()) + "\n" for r in kept).encode())

    def append(self, row: EpochRow, checkpoint: Checkpoint, keep_previous: bool = False) -> None:
        """The row first, then the checkpoint (see the crash rules above). With ``keep_previous`` the
        checkpoint it replaces stays as checkpoint.prev.pt: runs trained stacked write their checkpoints
        one after another, and a cut between two of them is undone by going back one epoch."""
        with open(self.path / METRICS_FILE, "a") as handle:
            handle.write(_json(row.as_dict()) + "\n")
            handle.flush()
            os.fsync(handle.fileno())
        current = self.path / CHECKPOINT_FILE
        if keep_previous and current.exists():
            os.replace(current, self.path / PREVIOUS_FILE)  # atomic; a cut now leaves the previous one
        save_checkpoint(current, checkpoint.to_state())

    def finish(self, config: ExperimentConfig, records: dict[int, dict], train_labels: np.ndarray,
               predictions: dict[str, np.ndarray], stacked_runs: int = 1, compiled_graphs: int | None = None) -> dict:
        """Write samples.npz, predictions.npz and, last, result.json; return the result."""
        result = RunResult.from_rows(config, self.rows(up_to=config.train.epochs), stacked_runs, compiled_graphs)
        epochs = sorted(records)
        _save_npz(self.path / SAMPLES_FILE, epochs=np.array(epochs),
                  p_true=np.stack([records[e]["p_true"].numpy() for e in epochs]),
                  correct=np.stack([records[e]["correct"].numpy() for e in epochs]), labels=train_labels)
        _save_npz(self.path / PREDICTIONS_FILE, **predictions)
        atomic_write_bytes(self.path / RESULT_FILE, _json(result.as_dict(), indent=2).encode())
        (self.path / PREVIOUS_FILE).unlink(missing_ok=True)  # a finished run needs no way back
        (self.path / FAILURE_FILE).unlink(missing_ok=True)
        return result.as_dict()

    def record_failure(self, message: str) -> None:
        """Note why an attempt stopped with an error, for ``gdsoftmax sweep --status``."""
        self.path.mkdir(parents=True, exist_ok=True)
        atomic_write_bytes(self.path / FAILURE_FILE, message.encode())

    # ---- reading
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
        for name in (CHECKPOINT_FILE, PREVIOUS_FILE):
            path = self.path / name
            if path.exists():
                checkpoint = _read(path, lambda p: Checkpoint.from_state(load_checkpoint(p, map_location=map_location)))
                if epoch is None or checkpoint.epoch == epoch:
                    return checkpoint
        return None

    def checkpoint_epochs(self) -> tuple[int, int | None]:
        """The newest checkpoint's epoch (0 without one) and the previous one's (None without one)."""
        epochs = [self._epoch_of(self.path / n) if (self.path / n).exists() else None
                  for n in (CHECKPOINT_FILE, PREVIOUS_FILE)]
        if epochs[0] is None:  # cut between keeping the previous one and writing the new one
            return epochs[1] or 0, None
        return epochs[0], epochs[1]

    def checkpoint_epoch(self) -> int:
        """The epoch the newest checkpoint holds (0 without one); raises if it cannot be read."""
        return self.checkpoint_epochs()[0]

    def _epoch_of(self, path: Path) -> int:
        # mapped, not read: resuming and sweep planning ask for epochs often, and weights can be large
        return _read(path, lambda p: int(load_checkpoint(p, mmap=True)["epoch"]))

    def rows(self, up_to: int | None = None) -> list[EpochRow]:
        """Rows with epoch <= ``up_to`` (all without it); a torn last line from a crash is skipped."""
        rows = []
        path = self.path / METRICS_FILE
        if path.exists():
            for line in path.read_text().splitlines():
                try:
                    row = EpochRow.from_dict(json.loads(line))
                except (json.JSONDecodeError, KeyError, TypeError):
                    continue
                if up_to is None or row.epoch <= up_to:
                    rows.append(row)
        return rows

    def result(self) -> dict:
        return _read(self.path / RESULT_FILE, lambda p: json.loads(p.read_text()))

    def read(self) -> RunRecord:
        """A finished run: config, rows, per-sample records, predictions and result."""
        samples, predictions = (_read(self.path / name, _npz) for name in (SAMPLES_FILE, PREDICTIONS_FILE))
        return RunRecord(self.path, _read(self.path / CONFIG_FILE, load_config), self.rows(), samples, predictions,
                         self.result())


def _npz(path: Path) -> dict:
    with np.load(path, allow_pickle=False) as arrays:
        return {k: arrays[k] for k in arrays.files}


def _short(value) -> str:
    text = json.dumps(value, default=str)
    return text if len(text) <= 40 else text[:37] + "..."


def finished_runs(sweep_dir: str | Path) -> list[RunDirectory]:
    """The finished runs directly below ``sweep_dir``, in name order."""
    return [RunDirectory(done.parent) for done in sorted(Path(sweep_dir).glob(f"*/{RESULT_FILE}"))]


def failed_runs(sweep_dir: str | Path) -> list[RunDirectory]:
    """The runs directly below ``sweep_dir`` whose last attempt stopped with an error, in name order."""
    runs = [RunDirectory(path) for path in sorted(Path(sweep_dir).iterdir()) if path.is_dir()]
    return [run for run in runs if not run.is_finished and run.failure() is not None]


def _save_npz(path: Path, **arrays) -> None:
    buffer = io.BytesIO()
    np.savez_compressed(buffer, **arrays)
    atomic_write_bytes(path, buffer.getvalue())
