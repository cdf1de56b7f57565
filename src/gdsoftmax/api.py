"""The command line's work as Python functions, for notebooks and scripts: ``train``, ``sweep``, ``tune``,
``report`` and ``compare``.

Each takes a config as a TOML path, a dict of the same tables, or an :class:`ExperimentConfig`, plus ``key=value``
overrides as the command line's ``--set`` takes them, and writes the same run directories (with the same identity
rules: a run is resumed only by its own config) under ``out``. ``model`` and ``data`` may be Python objects,
so that a notebook needs no module on disk:

* ``model``: a callable taking ``num_classes`` and ``image_shape`` (C, H, W) (and ``model.options`` as
  keywords), returning an ``nn.Module`` that maps images to logits;
* ``data``: a callable without arguments returning ``(train, test)``, two Datasets of ``(image, label)``.

The factories' source is part of the runs' identity (a changed function is a new run). Objects live in this
process: a launcher that trains in other processes needs them by import path (``"mypkg.nets:build"``) instead.
``train`` and ``sweep`` import only the engine; ``tune``, ``report`` and ``compare`` import Optuna and the
studies when they are called, so that a training pays for neither.

>>> import tempfile, torch
>>> def build(num_classes, image_shape):
...     return torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, num_classes))
>>> out = tempfile.mkdtemp()
>>> results = sweep({"name": "mine", "train": {"epochs": 1}, "sweep": {"loss.beta": [1.0, 5.0]}}, out,
...                 model=build, progress=False)
mine: 2 cell(s) in .../mine
>>> [result["cell"] for result in results]
['beta=1', 'beta=5']

``report(f"{out}/mine")`` then writes the report of those runs, its verdict first.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from pathlib import Path

from gdsoftmax.engine.config.schema import (
    ConfigError,
    ExperimentConfig,
    load_config,
    parse_config_with,
    to_dict,
)
from gdsoftmax.engine.loop.trainer import run_experiment
from gdsoftmax.engine.sweeps.sweep import holds_cells, run_sweep
from gdsoftmax.engine.workspace.user_code import register

__all__ = ["compare", "config", "report", "sweep", "train", "tune"]

ConfigLike = str | Path | dict | ExperimentConfig


def config(source: ConfigLike, overrides: list[str] | tuple[str, ...] = (), *, model: Callable | None = None,
           data: Callable | None = None, without_sweep: bool = False) -> ExperimentConfig:
    """The validated config of ``source`` with ``overrides`` applied and the Python ``model`` / ``data``
    factories (if given) in ``model.name`` / ``data.dataset``.

    >>> config({"train": {"epochs": 2}}, ["loss.beta=5"]).loss.beta.describe()
    'β = 5'
    """
    extra = [f"model.name={_quoted(register(model, 'model'))}"] if model is not None else []
    extra += [f"data.dataset={_quoted(register(data, 'data'))}"] if data is not None else []
    if isinstance(source, str | Path):
        return load_config(source, [*overrides, *extra], without_sweep=without_sweep)
    if isinstance(source, ExperimentConfig) and not (overrides or extra or without_sweep):
        return copy.deepcopy(source)
    if not isinstance(source, dict | ExperimentConfig):
        raise ConfigError(f"a config is a TOML path, a dict or an ExperimentConfig, got {type(source).__name__}")
    raw = copy.deepcopy(source) if isinstance(source, dict) else to_dict(source)
    return parse_config_with(raw, [*overrides, *extra], without_sweep=without_sweep)


def _quoted(name: str) -> str:
    return f'"{name}"'


def train(source: ConfigLike, out: str | Path = "runs", *, overrides=(), model: Callable | None = None,
          data: Callable | None = None, data_dir: str | Path | None = None, restart: bool = False,
          progress: bool = True) -> dict:
    """Train the config itself (its [sweep] table is ignored) in ``out/NAME``; returns its final values."""
    experiment = config(source, overrides, model=model, data=data, without_sweep=True)
    if data_dir:
        experiment.data.data_dir = str(data_dir)
    run_dir = Path(out) / experiment.name
    if holds_cells(run_dir):
        raise ValueError(f"{run_dir} holds the cells of a sweep of this config; train one run into another folder, "
                         f"e.g. --out {Path(out) / 'single'}")
    return {"cell": experiment.name, **run_experiment(experiment, run_dir, progress=progress, restart=restart)}


def sweep(source: ConfigLike, out: str | Path = "runs", *, overrides=(), model: Callable | None = None,
          data: Callable | None = None, data_dir: str | Path | None = None, restart: bool = False,
          progress: bool = True, max_stack: int = 32, max_cells: int = 1000,
          shard: tuple[int, int] = (0, 1)) -> list[dict]:
    """Every cell of the config's [sweep] grid in ``out/NAME/CELL``; returns each cell's final values."""
    experiment = config(source, overrides, model=model, data=data)
    if data_dir:
        experiment.data.data_dir = str(data_dir)
    if max_stack < 1:
        raise ValueError(f"max_stack must be at least 1, got {max_stack}")
    return run_sweep(experiment, out, shard=shard, progress=progress, max_stack=max_stack, restart=restart,
                     max_cells=max_cells)


def tune(source: ConfigLike, out: str | Path = "runs", *, overrides=(), model: Callable | None = None,
         data: Callable | None = None, data_dir: str | Path | None = None, restart: bool = False,
         progress: bool = True, worker: int = 0, command: str = "") -> Path:
    """Search the config's [tune.space] on Optuna (trials in ``out/NAME/trial-NNNN``); returns the report's path.
    ``best.toml`` beside it is the chosen setting; confirm it with a seeded :func:`sweep` against β = 1."""
    from gdsoftmax.engine.sweeps.tuning import parse_tune, run_tune  # Optuna: imported when a search runs
    from gdsoftmax.studies.tune_report import build_tune_report

    experiment = config(source, overrides, model=model, data=data)
    if data_dir:
        experiment.data.data_dir = str(data_dir)
    spec = parse_tune(experiment)
    _, root = run_tune(experiment, out, worker=worker, progress=progress, restart=restart)
    return build_tune_report(root, spec.objective, command, spec.max_accuracy_drop)


def report(sweep_dir: str | Path, out: str | Path | None = None, *, bins: int = 15, command: str = "",
           progress: bool = True) -> Path:
    """The report of a sweep's runs (``report.md``, tables and figures, its verdict first; ECE at 15 bins as every
    command, 10 for the paper's tables); returns its path."""
    from gdsoftmax.studies.report import build_report  # the studies' imports, paid when a report is made

    return build_report(sweep_dir, out, n_bins=bins, command=command, progress=progress)


def compare(predictions: str | Path, out: str | Path | None = None, *, reference: str = "beta=1",
            command: str = "") -> Path:
    """The verdict for predictions from any training loop, ``SETTING/SEED.npz`` under ``predictions`` (see
    ``gdsoftmax compare --help``); returns the report's path."""
    from gdsoftmax.studies.compare import compare as compare_predictions
    from gdsoftmax.studies.compare import write_compare_report

    result = compare_predictions(predictions, reference=reference)
    return write_compare_report(result, out or Path(predictions) / "report", command=command)
