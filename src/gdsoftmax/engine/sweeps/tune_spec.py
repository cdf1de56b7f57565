"""A ``[tune]`` table read and checked: the objective, the number of trials, the storage and the search space,
each key of which must be a config key that takes its range's values.

>>> from gdsoftmax.engine.config.schema import parse_config
>>> config = parse_config({"tune": {"space": {"loss.beta": {"low": 0.1, "high": 10.0, "log": True}}}})
>>> spec = parse_tune(config)
>>> spec.objective, spec.direction, spec.space[0].key
('val_nll', 'minimize', 'loss.beta')
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from gdsoftmax.engine.config.schema import ConfigError, ExperimentConfig, apply_assignments, parse_config
from gdsoftmax.engine.rundir.records import identity

__all__ = ["OBJECTIVES", "SearchKey", "TuneSpec", "parse_tune"]

OBJECTIVES = {"val_nll": "minimize", "val_ece": "minimize", "val_accuracy": "maximize"}


@dataclass(frozen=True)
class SearchKey:
    key: str
    low: float | None = None
    high: float | None = None
    log: bool = False
    choices: tuple = ()
    integer: bool = False  # the config key takes whole numbers (train.batch_size): searched as integers

    def suggest(self, trial):
        if self.choices:
            return trial.suggest_categorical(self.key, list(self.choices))
        if self.integer:
            return trial.suggest_int(self.key, int(self.low), int(self.high), log=self.log)
        return trial.suggest_float(self.key, self.low, self.high, log=self.log)


@dataclass(frozen=True)
class TuneSpec:
    objective: str
    trials: int
    space: tuple[SearchKey, ...]
    storage: str
    seed: int
    max_accuracy_drop: float
    prune_after: int = 1

    @property
    def direction(self) -> str:
        return OBJECTIVES[self.objective]


def _search_key(key: str, spec, config: ExperimentConfig) -> SearchKey:
    where = f"tune.space.{key}"
    if not isinstance(spec, dict) or not (set(spec) <= {"low", "high", "log", "choices"}):
        raise ConfigError(f"{where} must be {{low = ..., high = ..., log = true}} or {{choices = [...]}}, got {spec!r}")
    if "choices" in spec:
        if not isinstance(spec["choices"], list) or not spec["choices"]:
            raise ConfigError(f"{where}.choices must be a non-empty list")
        return SearchKey(key, choices=tuple(spec["choices"]))
    low, high, log = spec.get("low"), spec.get("high"), bool(spec.get("log", False))
    if not all(isinstance(v, int | float) and math.isfinite(v) for v in (low, high)) or not low < high:
        raise ConfigError(f"{where} needs numbers low < high, got low = {low!r}, high = {high!r}")
    if log and low <= 0:
        raise ConfigError(f"{where}: a log-uniform range needs low > 0, got {low!r}")
    current = identity(config).get(key)
    if isinstance(current, int) and not isinstance(current, bool):  # a whole-number key is searched as one
        if not all(float(v).is_integer() for v in (low, high)):
            raise ConfigError(f"{where}: {key} takes whole numbers, so low and high must be whole numbers too, got "
                              f"low = {low!r}, high = {high!r}")
        return SearchKey(key, float(low), float(high), log, integer=True)
    return SearchKey(key, float(low), float(high), log)


def parse_tune(config: ExperimentConfig) -> TuneSpec:
    """The ``[tune]`` table checked: every key of the space is a config key that takes its range's values."""
    raw = dict(config.tune)
    known = {"objective", "trials", "storage", "seed", "max_accuracy_drop", "space", "prune_after"}
    if not raw:
        raise ConfigError("the config has no [tune] table; add one with an objective and a [tune.space]")
    if set(raw) - known:
        raise ConfigError(f"unknown key tune.{sorted(set(raw) - known)[0]}; valid keys in [tune]: {sorted(known)}")
    objective = raw.get("objective", "val_nll")
    if objective not in OBJECTIVES:
        raise ConfigError(f"tune.objective must be one of {sorted(OBJECTIVES)}, got {objective!r}")
    space = raw.get("space", {})
    if not isinstance(space, dict) or not space:
        raise ConfigError("tune.space is empty: give each searched key a range, e.g. "
                          '"loss.beta" = { low = 0.05, high = 20.0, log = true }')
    keys = tuple(_search_key(key, spec, config) for key, spec in space.items())
    for key in keys:  # both ends (or every choice) must make a valid config
        for value in key.choices or (key.low, key.high):
            parse_config(apply_assignments(config, {key.key: int(value) if key.integer else value}))
    trials = raw.get("trials", 20)
    if not isinstance(trials, int) or trials < 1:
        raise ConfigError(f"tune.trials must be a whole number >= 1, got {trials!r}")
    # an early epoch's value says little of the last one's (ECE in particular): prune after a third by default
    prune_after = raw.get("prune_after", config.train.epochs // 3)
    if not isinstance(prune_after, int) or not 0 <= prune_after < config.train.epochs:
        raise ConfigError(f"tune.prune_after must be a whole number of epochs in [0, train.epochs = "
                          f"{config.train.epochs}), got {prune_after!r}")
    seed, drop, storage = raw.get("seed", 0), raw.get("max_accuracy_drop", 0.01), raw.get("storage", "")
    if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed < 2**31:
        raise ConfigError(f"tune.seed must be a whole number in [0, 2**31), got {seed!r}")
    if isinstance(drop, bool) or not isinstance(drop, int | float) or not 0 <= drop < 1:
        raise ConfigError(f"tune.max_accuracy_drop is a fraction of accuracy in [0, 1), got {drop!r}")
    if not isinstance(storage, str):
        raise ConfigError(f'tune.storage is an RDB URL, or "" for SQLite in the out folder, got {storage!r}')
    if not config.data.val_size:
        raise ConfigError("data.val_size = 0 leaves no validation split, and the search is judged on it (never on "
                          "test): set data.val_size, e.g. --set data.val_size=0.1")
    return TuneSpec(objective, trials, keys, storage, seed, float(drop), prune_after)
