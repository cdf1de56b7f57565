"""What a run directory holds: its file names, the records written in them, and the run's identity.

Shared by :mod:`gdsoftmax.engine.rundir.view` (reading) and :mod:`gdsoftmax.engine.rundir.writer`
(writing). Records are plain dataclasses of numbers and strings, so every file is JSON, TOML,
npz or a ``weights_only`` checkpoint.

>>> row = EpochRow(1, 10, 1.0, 0.1, 0.5, 0.5, 0.8, 0.6, 0.8, 0.6, 0.8, 1.2, {"margin": 3.0})
>>> EpochRow.from_dict(row.as_dict()) == row
True
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
from dataclasses import dataclass, field
from pathlib import Path

from gdsoftmax.engine.config.schema import ExperimentConfig, to_dict
from gdsoftmax.engine.workspace.user_code import is_import_path, source_fingerprint

__all__ = ["CHECKPOINT_FILE", "CONFIG_FILE", "FAILURE_FILE", "FEATURES_FILE", "IDENTITY_FILE", "LOCK_FILE",
           "METRICS_FILE", "NOT_IDENTITY", "PREDICTIONS_FILE", "PREVIOUS_FILE", "RESULT_FILE", "RUN_FILES",
           "SAMPLES_FILE",
           "Checkpoint", "DamagedRunError", "EpochRow", "RunLockedError", "RunMismatchError", "RunRecord",
           "RunResult", "checked_result", "fingerprint", "identity", "identity_differences", "read_or_explain",
           "to_json"]

CONFIG_FILE, METRICS_FILE, CHECKPOINT_FILE = "config.toml", "metrics.jsonl", "checkpoint.pt"
FAILURE_FILE = "failure.txt"  # why the last attempt stopped with an error (cleared when the run finishes)
PREVIOUS_FILE = "checkpoint.prev.pt"  # stacked runs keep the epoch before, to realign after a cut
SAMPLES_FILE, PREDICTIONS_FILE, RESULT_FILE = "samples.npz", "predictions.npz", "result.json"
IDENTITY_FILE, LOCK_FILE = "run.json", "lock"
FEATURES_FILE = "features.json"  # the final model's feature geometry, measured after training (engine.features)
# TensorBoard event files mirrored from metrics.jsonl (train.log = ["tensorboard"]), in the run directory itself so
# that TensorBoard names the run after its cell
RUN_FILES = (CONFIG_FILE, METRICS_FILE, CHECKPOINT_FILE, PREVIOUS_FILE, SAMPLES_FILE, PREDICTIONS_FILE, RESULT_FILE,
             IDENTITY_FILE, FEATURES_FILE)
# keys that may change when a run is resumed: its length, where the data lives, which device trains it, what
# it logs and how often it looks at the test split (neither changes what is trained)
NOT_IDENTITY = ("train.epochs", "data.data_dir", "data.download", "train.device", "train.log", "train.test_every",
                "launcher", "sweep", "tune")


class RunMismatchError(ValueError):
    """The run directory holds a run of another config."""


class RunLockedError(RuntimeError):
    """Another live process is writing the run directory."""


class DamagedRunError(ValueError):
    """A file of the run directory cannot be read; the message names it and the way out."""


def read_or_explain(path: Path, reader):
    """``reader(path)``, or DamagedRunError naming the file and what to do."""
    try:
        return reader(path)
    except Exception as error:  # any failure to parse: truncated, overwritten, not ours
        raise DamagedRunError(f"{path} is damaged and cannot be read ({type(error).__name__}: "
                              f"{str(error).splitlines()[0][:100] if str(error) else 'no detail'}); delete the "
                              f"folder {path.parent} (that run only) and rerun its train or sweep command, which "
                              "trains that run anew and keeps every other") from error


def identity(config: ExperimentConfig) -> dict[str, object]:
    """The config's keys that define what a run is, flattened to dotted keys; where the model or the data is the
    user's own code (``module:callable``), a hash of its source too (``model.source``, ``data.source``), so that
    a run trained by one version of that code is never taken for a run of another."""
    flat = _flatten(to_dict(config))
    ident = {k: v for k, v in flat.items() if not any(k == n or k.startswith(n + ".") for n in NOT_IDENTITY)}
    for key, name in (("model.name", config.model.name), ("data.dataset", config.data.dataset)):
        if is_import_path(name):
            ident[f"{key.partition('.')[0]}.source"] = source_fingerprint(name, key)
    return ident


def identity_differences(recorded: dict, wanted: dict) -> list[str]:
    """Each key whose value differs between a recorded identity and a wanted one, as "key (there, now)".

    A key newer than the recorded run stands at its default there (that version had no other value).

    >>> identity_differences({"loss.beta": 1.0, "seed": 0}, {"loss.beta": 0.1, "seed": 0})
    ['loss.beta (1.0 there, 0.1 now)']
    """
    defaults = identity(ExperimentConfig())
    differ = sorted(k for k in set(recorded) | set(wanted) if recorded.get(k, defaults.get(k)) != wanted.get(k))
    return [f"{k} ({_short(recorded.get(k, defaults.get(k)))} there, {_short(wanted.get(k))} now)" for k in differ]


def _short(value) -> str:
    text = json.dumps(value, default=str)
    return text if len(text) <= 40 else text[:37] + "..."


def _flatten(tree: dict, prefix: str = "") -> dict[str, object]:
    flat = {}
    for key, value in tree.items():
        if isinstance(value, dict) and key not in ("options", "beta"):  # tables that are values, not sections
            flat.update(_flatten(value, f"{prefix}{key}."))
        else:
            flat[prefix + key] = value
    return flat


def to_json(value, **options) -> str:
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


def fingerprint(ident: dict) -> str:
    """A short stable hash of an identity (see :func:`identity`), written to run.json."""
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
    schedule: dict = field(default_factory=dict)  # the learning-rate scheduler's state; empty in older checkpoints

    def to_state(self) -> dict:
        """Tensors, numbers, strings, lists and dicts only, so ``weights_only=True`` loads it."""
        state = {"model": self.model, "optimizer": self.optimizer, "epoch": self.epoch, "step": self.step,
                 "lr": self.lr, "elapsed": self.elapsed, "rng": self.rng,
                 "records": {str(k): v for k, v in self.records.items()}, **self.objective}
        state = {**state, "rows": self.rows, "schedule": self.schedule}
        return {**state, "scaler": self.scaler} if self.scaler else state

    @classmethod
    def from_state(cls, state: dict) -> Checkpoint:
        return cls(state["model"], state["optimizer"], int(state["epoch"]), int(state["step"]), float(state["lr"]),
                   float(state["elapsed"]), state["rng"], {int(k): v for k, v in state["records"].items()},
                   {"lr_factor": float(state.get("lr_factor", 1.0)), "controller": state.get("controller", {})},
                   state.get("scaler", {}), list(state.get("rows", [])), dict(state.get("schedule", {})))


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
    precision: str | None = None  # the precision the run trained in ("auto" resolved for its device)

    @classmethod
    def from_rows(cls, config: ExperimentConfig, rows: list[EpochRow], stacked_runs: int = 1,
                  compiled_graphs: int | None = None, precision: str | None = None) -> RunResult:
        last = rows[-1] if rows else None
        best = max(rows, key=lambda r: r.val_acc if not math.isnan(r.val_acc) else -1) if rows else None
        return cls(config.name, config.seed, config.loss.beta.raw, max((r.epoch for r in rows), default=0),
                   *(None if last is None else getattr(last, k) for k in ("test_acc", "test_ce", "train_ce",
                                                                           "train_acc")),
                   None if best is None else best.val_acc, None if best is None else best.epoch,
                   None if last is None else last.wall_time, stacked_runs, compiled_graphs, precision)

    def as_dict(self) -> dict:
        return dataclasses.asdict(self)


RESULT_TYPES = {"name": (str,), "seed": (int,), "epochs": (int,), "test_acc": (int, float, type(None)),
                "train_ce": (int, float, type(None)), "train_acc": (int, float, type(None)),
                "best_val_acc": (int, float, type(None))}  # what sweeps, --status and reports read


def checked_result(result: object) -> dict:
    """A parsed result.json, or ValueError naming the field that is missing or of the wrong type."""
    if not isinstance(result, dict):
        raise ValueError(f"result.json holds {type(result).__name__}, not a table")
    for key, types in RESULT_TYPES.items():
        if key not in result:
            raise ValueError(f"no {key!r} field")
        if isinstance(result[key], bool) or not isinstance(result[key], types):
            raise ValueError(f"{key!r} is {result[key]!r}, not {' or '.join(t.__name__ for t in types)}")
    return result


@dataclass
class RunRecord:
    """A finished run as the reports read it."""

    path: Path
    config: ExperimentConfig
    rows: list[EpochRow]
    samples: dict
    predictions: dict
    result: dict
