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
resumes from its checkpoint. Every study first trains the reference run (``OUT/NAME/reference``, the
config with β = 1): the report sets each trial beside it, and for the ``val_ece`` objective its
validation accuracy bounds the search.
"""

from __future__ import annotations

import contextlib
import csv
import io
import json
import math
import shutil
import time
from pathlib import Path

import optuna
import torch

from gdsoftmax.analysis.binned import ECE_BINS
from gdsoftmax.analysis.estimators import binned_ece
from gdsoftmax.analysis.files import atomic_write_bytes
from gdsoftmax.analysis.metrics import calibration_metrics
from gdsoftmax.engine.config.schema import (
    ConfigError,
    ExperimentConfig,
    apply_assignments,
    config_to_toml,
    parse_config,
)
from gdsoftmax.engine.loop.trainer import TrainingDiverged, run_experiment
from gdsoftmax.engine.rundir.pidlock import is_stale, read_lock
from gdsoftmax.engine.rundir.records import LOCK_FILE, RunLockedError, RunMismatchError, identity, identity_differences
from gdsoftmax.engine.rundir.view import RunView, differences_shown
from gdsoftmax.engine.sweeps.tune_spec import OBJECTIVES, SearchKey, TuneSpec, parse_tune
from gdsoftmax.engine.workspace.cleanup import folders_removed_on_failure

__all__ = ["OBJECTIVES", "SearchKey", "TuneSpec", "parse_tune", "run_tune"]

PER_EPOCH = {"val_nll": "val_ce", "val_ece": "val_ece", "val_accuracy": "val_acc"}  # what the pruner sees
N_BINS = ECE_BINS
OPEN_ATTEMPTS = 5
# the [tune] keys that may change between runs of one study: how many trials, and where the study lives
NOT_STUDY_IDENTITY = ("trials", "storage")
STUDY_IDENTITY_ATTR = "gdsoftmax.identity"
OUTPUTS = ("trials.csv", "best.toml", "report.md", "objective.png", "reference.json")


def study_identity(config: ExperimentConfig) -> dict[str, object]:
    """What a study is: its runs' identity (:func:`~gdsoftmax.engine.rundir.records.identity`, the one rule
    ``train`` and ``sweep`` use) and its [tune] table, less how many trials and where it is stored."""
    tune = {f"tune.{k}": v for k, v in config.tune.items() if k not in NOT_STUDY_IDENTITY}
    return {**identity(config), **tune}


def _check_study(study, config: ExperimentConfig, root: Path) -> None:
    """A study continues only under the config it was started with: refused, naming the keys that differ."""
    recorded, wanted = study.user_attrs.get(STUDY_IDENTITY_ATTR), study_identity(config)
    if recorded is None:
        if study.trials:  # a study from before identities were recorded cannot prove what it searched
            raise RunMismatchError(f"{root} holds a study that does not record its config; rerun with --restart "
                                   "to search anew, or use another --out")
        study.set_user_attr(STUDY_IDENTITY_ATTR, wanted)
        return
    differ = identity_differences(recorded, wanted)
    if differ:
        raise RunMismatchError(f"{root} holds a study of another config: {differences_shown(differ)}. Use another "
                               "--out, or --restart to discard that study and its trials")


def discard_study(config: ExperimentConfig, spec: TuneSpec, root: Path, storage) -> None:
    """--restart: the study in its storage, its trial and reference run directories and its outputs."""
    with contextlib.suppress(KeyError):  # no such study yet
        optuna.delete_study(study_name=config.name, storage=storage)
    for folder in [*root.glob("trial-[0-9]*"), root / "reference"]:
        if folder.is_dir():
            holder = read_lock(folder / LOCK_FILE)
            if holder is not None and not is_stale(holder):
                raise RunMismatchError(f"{folder} is being trained by process {holder['pid']} on {holder['host']}; "
                                       "stop every worker of the study before --restart")
            shutil.rmtree(folder)
    for name in OUTPUTS:
        (root / name).unlink(missing_ok=True)


def open_storage(spec: TuneSpec, root: Path):
    """The study's RDB storage (SQLite in ``root`` unless tune.storage names one), or one line on failure."""
    url = spec.storage or f"sqlite:///{(root / 'optuna.db').resolve()}"
    for attempt in range(OPEN_ATTEMPTS):
        try:
            # workers on one SQLite file wait for each other's writes (SQLite's 5 s default lost a worker
            # to "database is locked" on a loaded machine)
            options = {"connect_args": {"timeout": 120}} if url.startswith("sqlite:") else {}
            return optuna.storages.RDBStorage(url, engine_kwargs=options)
        except Exception as error:  # SQLAlchemy's errors have no common base here; the line names the URL
            if attempt == OPEN_ATTEMPTS - 1:
                raise ConfigError(f"tune.storage {url!r} cannot be opened: {str(error).splitlines()[0][:160]}") \
                    from error
            time.sleep(0.25 * (attempt + 1))  # workers started together race to create the schema: try again
    raise AssertionError("unreachable")


def validation_values(run_dir: Path) -> dict[str, float]:
    """Accuracy, NLL and ECE (15 bins) of a finished run's validation predictions (for a language model, of
    every validation token: its predictions hold per-token confidence, correctness and log p, not logits)."""
    predictions = RunView(run_dir).predictions()
    if "val_logits" not in predictions:
        correct = torch.from_numpy(predictions["val_correct"]).double()
        return {"val_accuracy": float(correct.mean()),
                "val_nll": float(-torch.from_numpy(predictions["val_label_logprob"]).double().mean()),
                "val_ece": binned_ece(torch.from_numpy(predictions["val_confidence"]), correct, N_BINS)}
    report = calibration_metrics(torch.from_numpy(predictions["val_logits"]).double(),
                                 torch.from_numpy(predictions["val_labels"]), N_BINS)
    return {"val_accuracy": report.accuracy, "val_nll": report.nll, "val_ece": report.ece}


def _trained(config: ExperimentConfig, run_dir: Path, on_epoch=None, progress: bool = False) -> dict[str, float]:
    """Train ``run_dir`` (or resume it) unless it holds this very run finished; a folder holding a run of
    another config is refused by the same rule ``train`` and ``sweep`` follow (:meth:`RunView.mismatch`)."""
    view = RunView(run_dir)
    why = view.mismatch(config)
    if why is not None:
        raise RunMismatchError(why)
    if not view.is_finished or view.result()["epochs"] != config.train.epochs:
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
        if t.user_attrs.get("surplus"):  # started by a worker after the study had its trials: never trained
            continue
        state = "DIVERGED" if t.user_attrs.get("diverged") else t.state.name
        writer.writerow([t.number, state, t.user_attrs.get("run", ""), *(t.params.get(k, "") for k in keys),
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
             log=print, restart: bool = False) -> tuple[ExperimentConfig, Path]:
    """Run (or resume, or join) the study; write trials.csv and best.toml; return the best config and root.
    A study (and its reference run) of another config in ``out_dir`` is refused, unless ``restart``
    discards it first."""
    spec = parse_tune(config)
    root = Path(out_dir) / config.name
    with folders_removed_on_failure(root):  # a storage that cannot be opened leaves no empty OUT/NAME behind
        root.mkdir(parents=True, exist_ok=True)
        storage = open_storage(spec, root)
        if restart:
            discard_study(config, spec, root, storage)
        elif config.name in {s.study_name for s in optuna.get_all_study_summaries(storage, include_best_trial=False)}:
            _check_study(optuna.load_study(study_name=config.name, storage=storage), config, root)
    reference = _reference_values(config, root, spec.objective, progress, log)
    floor = reference["val_accuracy"] if spec.objective == "val_ece" else None
    if floor is not None:
        log(f"trials below a validation accuracy of {floor - spec.max_accuracy_drop:.4f} are infeasible")
    study = optuna.create_study(study_name=config.name, storage=storage, load_if_exists=True,
                                direction=spec.direction,
                                pruner=optuna.pruners.MedianPruner(n_startup_trials=3,
                                                                   n_warmup_steps=spec.prune_after))
    # seeded by worker and by the trials already in the study: a resumed or joining worker must not replay
    # the random start-up draws of the first one (trials state their constraint, for val_ece)
    study.sampler = optuna.samplers.TPESampler(seed=spec.seed + worker + 1000 * len(study.trials))
    _check_study(study, config, root)  # records the identity of a new study (another worker may have made it)
    requeued = _orphans_requeued(study, storage, root)
    if requeued:
        log(f"{requeued} trial(s) of a stopped worker enqueued again; each resumes its run directory")
    done = optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED
    finished = sum(t.state in done and not t.user_attrs.get("surplus") for t in study.trials)
    if finished < spec.trials:  # a finished study rewrites its files without a trial more
        study.optimize(lambda trial: _objective(trial, config, spec, root, floor),
                       callbacks=[optuna.study.MaxTrialsCallback(spec.trials, states=done)],
                       show_progress_bar=False)
    _refuse_if_all_diverged(study, spec)
    best, number = best_config(config, study, spec)
    write_trials(study, root, spec, number)
    atomic_write_bytes(root / "best.toml", config_to_toml(best).encode())
    return best, root


def _reference_values(config: ExperimentConfig, root: Path, objective: str, progress: bool, log) -> dict[str, float]:
    """β = 1 with everything else as the config says, trained once in ``root/reference``: the search is read
    against it (the report sets every trial beside it), and for val_ece it sets the accuracy floor."""
    raw = apply_assignments(config, {"loss.beta": 1.0})
    raw.update(name="reference", tune={})
    while True:
        try:
            values = _trained(parse_config(raw), root / "reference", progress=progress)
            break
        except RunLockedError:  # another worker of the study trains it: its result is ours when it is done
            time.sleep(1.0)
        except TrainingDiverged:  # the trials may still train (a larger β damps the gradient): searched all the same
            values = {"val_accuracy": math.nan, "val_nll": math.nan, "val_ece": math.nan}
            break
    atomic_write_bytes(root / "reference.json", json.dumps({**values, "objective": objective}).encode())
    log(f"reference (β = 1): validation accuracy {values['val_accuracy']:.4f}, NLL {values['val_nll']:.4f}, "
        f"ECE {values['val_ece']:.4f}")
    return values


def _diverged(study) -> list:
    """Trials whose loss diverged: ended as pruned (a failure would log a traceback for each), marked."""
    return [t for t in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.PRUNED,))
            if t.user_attrs.get("diverged")]


def _refuse_if_all_diverged(study, spec: TuneSpec) -> None:
    diverged = _diverged(study)
    complete = study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))
    if diverged and not complete:
        raise ValueError(f"{len(diverged)} trial(s) diverged (the loss became NaN or infinite) and none finished; "
                         f"the first: {diverged[0].user_attrs['diverged']}. Lower train.lr or narrow tune.space, "
                         "then rerun with --restart")


def _is_surplus(trial, spec: TuneSpec) -> bool:
    """Whether the finished trials and the running ones numbered before this one already make tune.trials (two
    workers that start together would otherwise both train the last trial)."""
    states = (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED, optuna.trial.TrialState.RUNNING)
    others = [t for t in trial.study.get_trials(deepcopy=False, states=states) if not t.user_attrs.get("surplus")]
    counted = [t for t in others if t.state != optuna.trial.TrialState.RUNNING or t.number < trial.number]
    return len(counted) >= spec.trials


def _objective(trial, config: ExperimentConfig, spec: TuneSpec, root: Path, reference: float | None) -> float:
    if _is_surplus(trial, spec):  # ended untrained, as pruned (a failure would log a traceback), and left out
        trial.set_user_attr("surplus", True)
        trial.study.stop()
        raise optuna.TrialPruned()
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
    except TrainingDiverged as error:  # counted among the trials asked for, so a search always ends
        trial.set_user_attr("diverged", str(error).split(" (")[0] + f" in {run}")
        raise optuna.TrialPruned() from error
    for name, value in values.items():
        trial.set_user_attr(name, value)
    if reference is not None:
        shortfall = reference - spec.max_accuracy_drop - values["val_accuracy"]
        trial.set_constraint("accuracy_drop", shortfall)  # feasible when <= 0; the sampler avoids the others
        trial.set_user_attr("feasible", shortfall <= 0)
    return values[spec.objective]
