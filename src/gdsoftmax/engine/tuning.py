"""``gdsoftmax tune``: a search over β (and any other config key) on Optuna, every trial an ordinary run.

A config's ``[tune]`` table names the objective, computed on the validation split (never the test
split), and the search space::

    [tune]
    objective = "val_ece"         # or "val_nll", "val_accuracy"
    max_accuracy_drop = 0.01      # val_ece only: a trial whose val accuracy is below β = 1's by more is infeasible
    trials = 20                   # finished (complete or pruned) trials in all, over every worker and restart
    storage = ""                  # an RDB URL; "" is SQLite in the out folder (OUT/NAME/optuna.db)
    seed = 0                      # the TPE sampler's (a worker adds its --worker index, a resumed study its trials)
    prune_after = 5               # epochs every trial trains before the median pruner may stop it (default: a third)
    [tune.space]
    "loss.beta" = { low = 0.05, high = 20.0, log = true }
    "train.lr_schedule" = { choices = ["step", "cosine"] }

Each trial trains in ``OUT/NAME/trial-NNNN``, a run directory like any other (identity, lock,
resume, TensorBoard), and reports its validation value after every epoch to a median pruner.
Workers (processes, or machines that see the same out folder) share the study through its
storage. A trial whose worker was killed is found at the next start (its run's lock is no longer
held), marked failed, and its parameters are enqueued again under the same run directory, which
resumes from its checkpoint. The ``val_ece`` objective first trains the reference run
(``OUT/NAME/reference``, the config with β = 1) whose validation accuracy bounds the search.
"""

from __future__ import annotations

import csv
import io
import math
import time
from dataclasses import dataclass
from pathlib import Path

import optuna
import torch

from gdsoftmax.analysis.metrics import calibration_metrics
from gdsoftmax.engine.checkpoint import atomic_write_bytes
from gdsoftmax.engine.cleanup import folders_removed_on_failure
from gdsoftmax.engine.config import ConfigError, ExperimentConfig, apply_assignments, config_to_toml, parse_config
from gdsoftmax.engine.pidlock import is_stale, read_lock
from gdsoftmax.engine.rundir.records import LOCK_FILE
from gdsoftmax.engine.rundir.view import RunView
from gdsoftmax.engine.trainer import TrainingDiverged, run_experiment

__all__ = ["OBJECTIVES", "SearchKey", "TuneSpec", "parse_tune", "run_tune"]

OBJECTIVES = {"val_nll": "minimize", "val_ece": "minimize", "val_accuracy": "maximize"}
PER_EPOCH = {"val_nll": "val_ce", "val_ece": "val_ece", "val_accuracy": "val_acc"}  # what the pruner sees
N_BINS = 15
OPEN_ATTEMPTS = 5


@dataclass(frozen=True)
class SearchKey:
    key: str
    low: float | None = None
    high: float | None = None
    log: bool = False
    choices: tuple = ()

    def suggest(self, trial):
        if self.choices:
            return trial.suggest_categorical(self.key, list(self.choices))
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


def _search_key(key: str, spec) -> SearchKey:
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
    keys = tuple(_search_key(key, spec) for key, spec in space.items())
    for key in keys:  # both ends (or every choice) must make a valid config
        for value in key.choices or (key.low, key.high):
            parse_config(apply_assignments(config, {key.key: value}))
    trials = raw.get("trials", 20)
    if not isinstance(trials, int) or trials < 1:
        raise ConfigError(f"tune.trials must be a whole number >= 1, got {trials!r}")
    # an early epoch's value says little of the last one's (ECE in particular): prune after a third by default
    prune_after = raw.get("prune_after", config.train.epochs // 3)
    if not isinstance(prune_after, int) or not 0 <= prune_after < config.train.epochs:
        raise ConfigError(f"tune.prune_after must be a whole number of epochs in [0, train.epochs = "
                          f"{config.train.epochs}), got {prune_after!r}")
    return TuneSpec(objective, trials, keys, str(raw.get("storage", "")), int(raw.get("seed", 0)),
                    float(raw.get("max_accuracy_drop", 0.01)), prune_after)


def open_storage(spec: TuneSpec, root: Path):
    """The study's RDB storage (SQLite in ``root`` unless tune.storage names one), or one line on failure."""
    url = spec.storage or f"sqlite:///{(root / 'optuna.db').resolve()}"
    for attempt in range(OPEN_ATTEMPTS):
        try:
            return optuna.storages.RDBStorage(url)
        except Exception as error:  # SQLAlchemy's errors have no common base here; the line names the URL
            if attempt == OPEN_ATTEMPTS - 1:
                raise ConfigError(f"tune.storage {url!r} cannot be opened: {str(error).splitlines()[0][:160]}") \
                    from error
            time.sleep(0.25 * (attempt + 1))  # workers started together race to create the schema: try again
    raise AssertionError("unreachable")


def validation_values(run_dir: Path) -> dict[str, float]:
    """Accuracy, NLL and ECE (15 bins) of a finished run's validation predictions."""
    predictions = RunView(run_dir).predictions()
    report = calibration_metrics(torch.from_numpy(predictions["val_logits"]).double(),
                                 torch.from_numpy(predictions["val_labels"]), N_BINS)
    return {"val_accuracy": report.accuracy, "val_nll": report.nll, "val_ece": report.ece}


def _trained(config: ExperimentConfig, run_dir: Path, on_epoch=None, progress: bool = False) -> dict[str, float]:
    if not RunView(run_dir).is_finished or RunView(run_dir).result()["epochs"] != config.train.epochs:
        run_experiment(config, run_dir, progress=progress, on_epoch=on_epoch)
    return validation_values(run_dir)


def _orphans_requeued(study, storage, root: Path) -> int:
    """Trials left RUNNING by a worker that no longer runs: failed, and their parameters enqueued again
    to resume in the same run directory."""
    study_id = storage.get_study_id_from_name(study.study_name)
    requeued = 0
    for trial in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,)):
        run = trial.user_attrs.get("run")
        holder = read_lock(root / run / LOCK_FILE) if run else None
        if holder is not None and not is_stale(holder):
            continue  # a live worker trains it
        trial_id = storage.get_trial_id_from_study_id_trial_number(study_id, trial.number)
        storage.set_trial_state_values(trial_id, optuna.trial.TrialState.FAIL)
        study.enqueue_trial(trial.params, user_attrs={"run": run} if run else {})
        requeued += 1
    return requeued


def write_trials(study, root: Path, spec: TuneSpec, best: int) -> Path:
    """``trials.csv``: every trial's number, state, run directory, parameters and validation values, and
    which one is ``best`` (its number)."""
    keys = [k.key for k in spec.space]
    values = ["val_accuracy", "val_nll", "val_ece", "feasible"]
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["number", "state", "run", *keys, *values, "best"])
    for t in study.get_trials(deepcopy=False):
        writer.writerow([t.number, t.state.name, t.user_attrs.get("run", ""), *(t.params.get(k, "") for k in keys),
                         *(t.user_attrs.get(v, "") for v in values), "yes" if t.number == best else ""])
    atomic_write_bytes(root / "trials.csv", buffer.getvalue().encode())
    return root / "trials.csv"


def best_config(config: ExperimentConfig, study, spec: TuneSpec) -> tuple[ExperimentConfig, int]:
    """The base config with the best feasible trial's parameters, no [tune], named NAME-best, and that trial's
    number."""
    trials = [t for t in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))
              if t.user_attrs.get("feasible", True)]
    if not trials:
        raise ValueError("no trial finished feasible: raise tune.trials, widen tune.space or tune.max_accuracy_drop")
    pick = min if spec.direction == "minimize" else max
    best = pick(trials, key=lambda t: t.value)
    raw = apply_assignments(config, best.params)
    raw.update(name=f"{config.name}-best", tune={})
    return parse_config(raw), best.number


def run_tune(config: ExperimentConfig, out_dir: str | Path, *, worker: int = 0, progress: bool = True,
             log=print) -> tuple[ExperimentConfig, Path]:
    """Run (or resume, or join) the study; write trials.csv and best.toml; return the best config and root."""
    spec = parse_tune(config)
    root = Path(out_dir) / config.name
    with folders_removed_on_failure(root):  # a storage that cannot be opened leaves no empty OUT/NAME behind
        root.mkdir(parents=True, exist_ok=True)
        storage = open_storage(spec, root)
    reference = None
    if spec.objective == "val_ece":
        raw = apply_assignments(config, {"loss.beta": 1.0})
        raw.update(name="reference", tune={})
        reference = _trained(parse_config(raw), root / "reference", progress=progress)["val_accuracy"]
        log(f"reference (β = 1): validation accuracy {reference:.4f}; trials below "
            f"{reference - spec.max_accuracy_drop:.4f} are infeasible")
    study = optuna.create_study(study_name=config.name, storage=storage, load_if_exists=True,
                                direction=spec.direction,
                                pruner=optuna.pruners.MedianPruner(n_startup_trials=3,
                                                                   n_warmup_steps=spec.prune_after))
    # seeded by worker and by the trials already in the study: a resumed or joining worker must not replay
    # the random start-up draws of the first one (trials state their constraint, for val_ece)
    study.sampler = optuna.samplers.TPESampler(seed=spec.seed + worker + 1000 * len(study.trials))
    requeued = _orphans_requeued(study, storage, root)
    if requeued:
        log(f"{requeued} trial(s) of a stopped worker enqueued again; each resumes its run directory")
    done = optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED
    finished = sum(t.state in done for t in study.trials)
    if finished < spec.trials:  # a finished study rewrites its files without a trial more
            study.optimize(lambda trial: _objective(trial, config, spec, root, reference), catch=(TrainingFailed,),
                       callbacks=[optuna.study.MaxTrialsCallback(spec.trials, states=done)],
                       show_progress_bar=False)
    best, number = best_config(config, study, spec)
    write_trials(study, root, spec, number)
    atomic_write_bytes(root / "best.toml", config_to_toml(best).encode())
    return best, root


class TrainingFailed(RuntimeError):
    """A trial's training stopped with an error (a diverged loss): the trial fails, the study goes on."""


def _objective(trial, config: ExperimentConfig, spec: TuneSpec, root: Path, reference: float | None) -> float:
    params = {key.key: key.suggest(trial) for key in spec.space}
    run = trial.user_attrs.get("run") or f"trial-{trial.number:04d}"
    trial.set_user_attr("run", run)
    raw = apply_assignments(config, params)
    raw.update(name=run, tune={})

    def on_epoch(row: dict) -> None:
        value = row.get(PER_EPOCH[spec.objective])
        if value is not None and math.isfinite(value):
            trial.report(value, row["epoch"])
            if trial.should_prune():
                raise optuna.TrialPruned()

    try:
        values = _trained(parse_config(raw), root / run, on_epoch)
    except TrainingDiverged as error:
        raise TrainingFailed(str(error)) from error
    for name, value in values.items():
        trial.set_user_attr(name, value)
    if reference is not None:
        shortfall = reference - spec.max_accuracy_drop - values["val_accuracy"]
        trial.set_constraint("accuracy_drop", shortfall)  # feasible when <= 0; the sampler avoids the others
        trial.set_user_attr("feasible", shortfall <= 0)
    return values[spec.objective]
