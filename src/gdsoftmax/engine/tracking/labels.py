"""What an experiment tracker shows of a run: its labels and its parameters, swept keys first.

A sweep knows which keys it sweeps; a cell's config no longer does (its ``[sweep]`` is empty). So
:func:`run_labels` is computed where the grid is expanded and handed to the trainer, which gives it to
each logger (TensorBoard, MLflow). A tracker then shows:

* the **cell** name as the run name, and the **setting** (the cell name less its seed part) as a
  group that the seeds of one setting share;
* the **swept** keys with their values in this cell, seed last, before the rest of the resolved
  config;
* β readably: the number of a constant β, or a label such as ``linear 0.1→1 over 15 epochs`` for a
  schedule, never the table's string.

>>> from gdsoftmax.engine.config.schema import parse_config
>>> grid = parse_config({"name": "demo", "sweep": {"loss.beta": [1.0, {"kind": "linear", "start": 0.1,
...                      "end": 1.0, "epochs": 15}], "seed": [0, 1]}})
>>> from gdsoftmax.engine.sweeps.grid import sweep_cells
>>> cell = sweep_cells(grid)[3]
>>> labels = run_labels(cell.config, grid, cell.setting)
>>> labels.cell, labels.setting, labels.swept
('beta=linear0.1-1_seed=1', 'beta=linear0.1-1', {'loss.beta': 'linear 0.1→1 over 15 epochs', 'seed': 1})
"""

from __future__ import annotations

from dataclasses import dataclass, field

from gdsoftmax.engine.config.schema import ExperimentConfig, to_dict
from gdsoftmax.loss.schedules import describe_beta

__all__ = ["RunLabels", "compared_params", "readable_beta", "run_labels", "tracked_params"]


@dataclass(frozen=True)
class RunLabels:
    """How a tracker names and groups a run: ``sweep`` (the experiment), ``cell`` (the run), ``setting``
    (the group its seeds share) and ``swept`` (the swept keys' values in this cell, seed last)."""

    sweep: str
    cell: str
    setting: str
    swept: dict = field(default_factory=dict)


def readable_beta(raw) -> float | str:
    """A constant β as its number (a tracker's parameter); a schedule or the controller as a short label
    (:func:`gdsoftmax.loss.schedules.describe_beta`).

    >>> readable_beta(0.5), readable_beta({"kind": "linear", "start": 0.01, "end": 0.1, "steps": 1000})
    (0.5, 'linear 0.01→0.1 over 1000 steps')
    >>> readable_beta({"kind": "pid", "start": 1.0, "kp": 1.0, "ki": 2.0})
    'pid from 1 (kp 1, ki 2)'
    """
    return describe_beta(raw, symbol=False, detail=True) if isinstance(raw, dict) else float(raw)


def _flat(config: ExperimentConfig) -> dict:
    flat = {}
    for section, values in to_dict(config).items():
        if section == "sweep":
            continue
        for key, value in (values.items() if isinstance(values, dict) else [("", values)]):
            flat[f"{section}.{key}" if key else section] = value
    return flat


def _shown(key: str, value):
    if key == "loss.beta":
        return readable_beta(value)
    return value if isinstance(value, bool | int | float | str) else str(value)


def run_labels(config: ExperimentConfig, sweep: ExperimentConfig | None = None,
               setting: str | None = None) -> RunLabels:
    """The labels of ``config``'s run; ``sweep`` is the config whose grid it is a cell of (None: a single run)."""
    if sweep is None or not sweep.sweep:
        return RunLabels(config.name, config.name, setting or config.name, {})
    keys = [k for k in sweep.sweep if k not in ("variants", "seed")]
    for variant in sweep.sweep.get("variants", []):
        keys += [k for k in variant if k != "label" and k not in keys]
    flat = _flat(config)
    swept = {key: _shown(key, flat[key]) for key in keys if key in flat}
    if "seed" in sweep.sweep:
        swept["seed"] = config.seed
    return RunLabels(sweep.name, config.name, setting or config.name, swept)


def tracked_params(config: ExperimentConfig, labels: RunLabels) -> dict:
    """Every resolved config value as a flat ``section.key`` scalar, the swept keys first, then ``setting``
    (the group of its seeds), then the rest in config order; lists and tables as text.

    >>> from gdsoftmax.engine.config.schema import parse_config
    >>> config = parse_config({"name": "one", "loss": {"beta": 0.5}})
    >>> list(tracked_params(config, RunLabels("one", "one", "one", {"loss.beta": 0.5})))[:3]
    ['loss.beta', 'setting', 'name']
    """
    rest = {key: _shown(key, value) for key, value in _flat(config).items() if key not in labels.swept}
    return {**labels.swept, "setting": labels.setting, **rest}


def compared_params(config: ExperimentConfig, labels: RunLabels) -> dict:
    """What a sweep's runs are compared by: the swept keys (β and seed for a single run), then ``setting``.

    TensorBoard's HParams table sorts its columns by name and has no room for a whole config: it gets
    these, and the resolved config goes beside them as text.

    >>> from gdsoftmax.engine.config.schema import parse_config
    >>> compared_params(parse_config({"name": "one", "loss": {"beta": 0.5}}), RunLabels("one", "one", "one"))
    {'loss.beta': 0.5, 'seed': 0, 'setting': 'one'}
    """
    swept = labels.swept or {"loss.beta": readable_beta(to_dict(config)["loss"]["beta"]), "seed": config.seed}
    return {**swept, "setting": labels.setting}
