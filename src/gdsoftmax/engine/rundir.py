"""The run directory: the one module that names, writes and reads a run's files.

* ``config.toml``      the resolved config (rerun with ``gdsoftmax train run_dir/config.toml``)
* ``metrics.jsonl``    one :class:`EpochRow` per epoch: loss as optimised, plain train CE, accuracies, β, lr, time
* ``checkpoint.pt``    a :class:`Checkpoint`: model, optimizer, epoch, step, every RNG state; written atomically
* ``samples.npz``      per training sample, true-class probability and correctness at chosen epochs
* ``predictions.npz``  final validation and test logits (and 2-D features when the model has them)
* ``result.json``      a :class:`RunResult`; its presence marks the run finished

Crash rules: each epoch appends its row first and then replaces the checkpoint, so a crash in
between re-runs that epoch; opening a run for resumption drops the rows written after its
checkpoint, so rows are never duplicated. ``result.json`` is written last.

>>> import tempfile
>>> run = RunDirectory(tempfile.mkdtemp())
>>> run.is_finished, run.checkpoint() is None
(False, True)
"""

from __future__ import annotations

import dataclasses
import io
import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from gdsoftmax.engine.checkpoint import atomic_write_bytes, load_checkpoint, save_checkpoint
from gdsoftmax.engine.config import ExperimentConfig, config_to_toml, load_config

__all__ = ["Checkpoint", "EpochRow", "RunDirectory", "RunRecord", "RunResult", "finished_runs"]

CONFIG_FILE, METRICS_FILE, CHECKPOINT_FILE = "config.toml", "metrics.jsonl", "checkpoint.pt"
SAMPLES_FILE, PREDICTIONS_FILE, RESULT_FILE = "samples.npz", "predictions.npz", "result.json"


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
        return cls(**{n: row[n] for n in names}, extra={k: v for k, v in row.items() if k not in names})

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

    def to_state(self) -> dict:
        """Tensors, numbers, strings, lists and dicts only, so ``weights_only=True`` loads it."""
        state = {"model": self.model, "optimizer": self.optimizer, "epoch": self.epoch, "step": self.step,
                 "lr": self.lr, "elapsed": self.elapsed, "rng": self.rng,
                 "records": {str(k): v for k, v in self.records.items()}, **self.objective}
        return {**state, "scaler": self.scaler} if self.scaler else state

    @classmethod
    def from_state(cls, state: dict) -> Checkpoint:
        return cls(state["model"], state["optimizer"], int(state["epoch"]), int(state["step"]), float(state["lr"]),
                   float(state["elapsed"]), state["rng"], {int(k): v for k, v in state["records"].items()},
                   {"lr_factor": float(state.get("lr_factor", 1.0)), "controller": state.get("controller", {})},
                   state.get("scaler", {}))


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
        return cls(config.name, config.seed, config.loss.beta.raw, len(rows),
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

    # ---- writing, in the order a run does it
    def open(self, config: ExperimentConfig, start_epoch: int) -> None:
        """Write the resolved config and drop metric rows from after the checkpoint being resumed."""
        self.path.mkdir(parents=True, exist_ok=True)
        atomic_write_bytes(self.path / CONFIG_FILE, config_to_toml(config).encode())
        rows = self.rows(up_to=start_epoch)
        atomic_write_bytes(self.path / METRICS_FILE, "".join(json.dumps(r.as_dict()) + "\n" for r in rows).encode())

    def append(self, row: EpochRow, checkpoint: Checkpoint) -> None:
        """The row first, then the checkpoint (see the crash rules above)."""
        with open(self.path / METRICS_FILE, "a") as handle:
            handle.write(json.dumps(row.as_dict()) + "\n")
            handle.flush()
            os.fsync(handle.fileno())
        save_checkpoint(self.path / CHECKPOINT_FILE, checkpoint.to_state())

    def finish(self, config: ExperimentConfig, records: dict[int, dict], train_labels: np.ndarray,
               predictions: dict[str, np.ndarray], stacked_runs: int = 1, compiled_graphs: int | None = None) -> dict:
        """Write samples.npz, predictions.npz and, last, result.json; return the result."""
        result = RunResult.from_rows(config, self.rows(up_to=config.train.epochs), stacked_runs, compiled_graphs)
        epochs = sorted(records)
        _save_npz(self.path / SAMPLES_FILE, epochs=np.array(epochs),
                  p_true=np.stack([records[e]["p_true"].numpy() for e in epochs]),
                  correct=np.stack([records[e]["correct"].numpy() for e in epochs]), labels=train_labels)
        _save_npz(self.path / PREDICTIONS_FILE, **predictions)
        atomic_write_bytes(self.path / RESULT_FILE, json.dumps(result.as_dict(), indent=2).encode())
        return result.as_dict()

    # ---- reading
    def checkpoint(self, map_location="cpu") -> Checkpoint | None:
        path = self.path / CHECKPOINT_FILE
        return Checkpoint.from_state(load_checkpoint(path, map_location=map_location)) if path.exists() else None

    def checkpoint_epoch(self) -> int:
        """The epoch the checkpoint holds (0 without one); raises if it cannot be read."""
        path = self.path / CHECKPOINT_FILE
        return int(load_checkpoint(path)["epoch"]) if path.exists() else 0

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
        return json.loads((self.path / RESULT_FILE).read_text())

    def read(self) -> RunRecord:
        """A finished run: config, rows, per-sample records, predictions and result."""
        with np.load(self.path / SAMPLES_FILE) as samples, np.load(self.path / PREDICTIONS_FILE) as predictions:
            return RunRecord(self.path, load_config(self.path / CONFIG_FILE), self.rows(), dict(samples),
                             dict(predictions), self.result())


def finished_runs(sweep_dir: str | Path) -> list[RunDirectory]:
    """The finished runs directly below ``sweep_dir``, in name order."""
    return [RunDirectory(done.parent) for done in sorted(Path(sweep_dir).glob(f"*/{RESULT_FILE}"))]


def _save_npz(path: Path, **arrays) -> None:
    buffer = io.BytesIO()
    np.savez_compressed(buffer, **arrays)
    atomic_write_bytes(path, buffer.getvalue())
