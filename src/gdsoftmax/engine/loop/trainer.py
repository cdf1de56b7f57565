"""The training loop: config -> task -> data -> model -> train -> metrics -> run directory.

One loop trains one run, or M runs at once. What is trained (images, token streams) is the config's
:class:`~gdsoftmax.engine.tasks.base.Task`; how a step is computed is a strategy; what a run is (its rows,
checkpoints, resumption and final files, through :class:`gdsoftmax.engine.rundir.writer.RunWriter`) is the
loop's. :class:`~gdsoftmax.engine.loop.one_model.OneModelRun` trains one model of any task (data-parallel under
torchrun); :class:`gdsoftmax.engine.loop.stacked.StackedRuns` trains image runs that differ only in beta
and seed as one stacked model. A strategy has ``members`` (one model per run, for evaluation),
``objectives``, ``eval_data``, ``load(checkpoints)``, ``state(m)``, ``learning_rates()`` (each run's
rate of its last step) and ``train_epoch(epoch) -> (M, 5)``: sums of loss, CE, correct and count,
and the first step with a non-finite loss (-1 if none), which stops the run. The optimizer and its
learning-rate schedule come from :mod:`gdsoftmax.engine.recipe.optim` and :mod:`gdsoftmax.engine.recipe.lr`.

A run killed at any moment resumes from its last checkpoint and ends bit-identical to one that
was never interrupted: data order and augmentation come from a generator saved in the checkpoint,
and metric rows written after that checkpoint are dropped on resume, so none is duplicated.
"""

from __future__ import annotations

import contextlib
import time
from pathlib import Path

from tqdm.auto import tqdm

from gdsoftmax.analysis.margins import margin_statistics
from gdsoftmax.engine.config.schema import ConfigError, ExperimentConfig
from gdsoftmax.engine.loop.distributed import Distributed
from gdsoftmax.engine.loop.one_model import OneModelRun
from gdsoftmax.engine.loop.stacked import StackedRuns
from gdsoftmax.engine.recipe.acceleration import compiled_graphs, resolve_precision
from gdsoftmax.engine.recipe.lr import learning_rate
from gdsoftmax.engine.rundir.checkpoint import seed_everything
from gdsoftmax.engine.rundir.records import Checkpoint, EpochRow, RunMismatchError, RunResult
from gdsoftmax.engine.rundir.writer import RunWriter
from gdsoftmax.engine.tasks.base import Task
from gdsoftmax.engine.tasks.registry import task_for
from gdsoftmax.engine.tracking.registry import discard_tracked, open_loggers, require_loggers
from gdsoftmax.engine.workspace.cleanup import folders_removed_on_failure

__all__ = ["TrainingDiverged", "learning_rate", "load_run_data", "run_experiment", "train"]


def run_experiment(config: ExperimentConfig, run_dir: str | Path, *, data=None,
                   progress: bool = True, restart: bool = False, on_epoch=None) -> dict:
    """Train one config in ``run_dir`` (resuming if it holds a checkpoint of it); return the summary."""
    return train([config], [run_dir], data=data, progress=progress, restart=restart, on_epoch=on_epoch)[0]


def train(configs: list[ExperimentConfig], run_dirs: list[str | Path], *, data=None,
          progress: bool = True, restart: bool = False, on_epoch=None, labels: list | None = None,
          out_dir: str | Path | None = None) -> list[dict]:
    """Train ``configs`` (one, or several that stack) in their run directories; return their summaries.

    A run directory that holds a run of another config is refused (RunMismatchError), unless
    ``restart`` discards it; a run directory that another process is writing is refused too.
    ``on_epoch(row)`` is called with the first run's metric row once its epoch is written (a
    search's pruner: an exception it raises stops training, the checkpoint of that epoch kept).
    ``labels`` (one :class:`~gdsoftmax.engine.tracking.labels.RunLabels` per config) name and group the runs in
    the trackers ``train.log`` lists; ``out_dir`` holds MLflow's default store.
    """
    runs = [RunWriter(d) for d in run_dirs]
    require_loggers(configs)
    world = Distributed.from_environment(configs[0].train.device)
    with contextlib.ExitStack() as locks:
        for run in runs:  # a run that fails before it writes anything leaves no empty folder behind
            locks.enter_context(folders_removed_on_failure(run.path, depth=0))
        if world.is_main:  # the lock first: nothing of a run that another process writes is touched
            for run in runs:
                locks.enter_context(run.lock())
            for run, config in zip(runs, configs, strict=True):
                if restart:
                    run.restart()
                    discard_tracked(run.path)
                run.claim(config)
        tracking = (labels or [None] * len(configs), None if out_dir is None else Path(out_dir))
        return _train(configs, runs, world, data, progress, on_epoch, tracking)


def _train(configs: list[ExperimentConfig], runs: list[RunWriter], world: Distributed, data,
           progress: bool, on_epoch=None, tracking=((), None)) -> list[dict]:
    first, task = configs[0], task_for(configs[0])
    seed_everything(first.seed)
    data = task.prepare(task.load(first) if data is None else data, first)
    steps_per_epoch = task.steps_per_epoch(data, first)  # a language model's "epoch": train.eval_every steps
    _refuse_unfinished_warmups(configs, steps_per_epoch)
    graphs_before = compiled_graphs() if first.train.compile else None
    fingerprint = _same_data_as_before(runs, data)
    strategy, precision = _strategy(task, configs, runs, data, world, steps_per_epoch)
    start_epoch, elapsed, records, rows = _resume(strategy, runs, world.device)
    if world.is_main:
        for run, config, done in zip(runs, configs, rows, strict=True):
            run.open(config, start_epoch, done, precision, fingerprint)
    logs = [open_loggers(c, r.path, done, label, tracking[1]) if world.is_main and c.train.log else None
            for r, c, done, label in zip(runs, configs, rows, tracking[0] or [None] * len(runs), strict=True)]

    started = time.perf_counter()
    bar = tqdm(range(start_epoch, first.train.epochs), desc=first.name if len(configs) == 1 else
               f"{len(configs)} runs stacked", initial=start_epoch, total=first.train.epochs,
               disable=not (progress and world.is_main), leave=False, unit="epoch")
    for epoch in bar:
        sums = strategy.train_epoch(epoch).tolist()  # the one host synchronisation of an epoch
        _stop_if_diverged(configs, runs, epoch, sums, steps_per_epoch)
        lrs = strategy.learning_rates()
        for m, (run, config) in enumerate(zip(runs, configs, strict=True)):
            step = (epoch + 1) * steps_per_epoch
            row = _close_epoch(task, strategy, m, config, epoch, step, lrs[m], sums[m], records[m])
            row.wall_time = elapsed[m] + time.perf_counter() - started
            rows[m].append(row.as_dict())
            if world.is_main:
                model, optimizer, rng, scaler, schedule = strategy.state(m)
                run.append(row, Checkpoint(model, optimizer, epoch + 1, step, lrs[m], row.wall_time, rng, records[m],
                                           strategy.objectives[m].state_dict(), scaler, rows[m], schedule),
                           keep_previous=len(configs) > 1)
                if logs[m] is not None:
                    logs[m].epoch(rows[m][-1])
            if m == 0:  # plain CE, not the β-loss: its floor is log β for β > 1, which would look stuck
                bar.set_postfix(train_ce=f"{row.train_ce:.3f}", test_acc=f"{row.test_acc:.4f}")
                if on_epoch is not None and world.is_main:
                    on_epoch(rows[0][-1])
        world.barrier()
    bar.close()

    labels = task.recorded_labels(strategy.eval_data, first).cpu().numpy()
    graphs = None if graphs_before is None else compiled_graphs() - graphs_before
    summaries = [run.finish(config, records[m], labels, task.predictions(strategy.members[m], strategy.eval_data,
                                                                         config), len(configs), graphs)
                 if world.is_main else RunResult.from_rows(config, []).as_dict()
                 for m, (run, config) in enumerate(zip(runs, configs, strict=True))]
    for log, run, config, summary in zip(logs, runs, configs, summaries, strict=True):
        if log is not None:
            predictions = run.read().predictions
            log.finish(config, summary, predictions.get("test_logits"), predictions.get("test_labels"))
    world.close()
    return summaries


def _refuse_unfinished_warmups(configs: list[ExperimentConfig], steps_per_epoch: int) -> None:
    """A warm-up in steps can be checked only once an epoch's steps are known: one the run cannot finish is
    refused before anything is written (its label would name an end β no step used)."""
    for config in configs:
        unfinished = config.loss.beta.unfinished_warmup(config.train.epochs, steps_per_epoch)
        if unfinished is not None:
            raise ConfigError(f"loss.beta of {config.name}: {unfinished} ({steps_per_epoch} steps an epoch); "
                              "shorten the warm-up's steps or raise train.epochs")


def load_run_data(config: ExperimentConfig):
    """The data a config trains on, as its task loads it (an image data set, a tokenized text corpus)."""
    return task_for(config).load(config)


def _same_data_as_before(runs: list[RunWriter], data) -> str:
    """The data's fingerprint; a run resumed on data whose content changed since it started is refused."""
    fingerprint = data.fingerprint()
    for run in runs:
        recorded = run.recorded_data() if run.checkpoint_epoch() else None
        if recorded is not None and recorded != fingerprint:
            raise RunMismatchError(f"{run.path} started on other data than it would resume on: {data.name}'s files "
                                   "changed since (another copy, a new download or another split). Train it anew "
                                   "with --restart, or point --data-dir at the data it started on")
    return fingerprint


def _strategy(task: Task, configs, runs: list[RunWriter], data, world: Distributed, steps_per_epoch: int):
    """The strategy that trains ``configs``, and the precision it trains in: a resumed run keeps the one
    it recorded when it started; stacked runs are always float32 (other precisions train alone)."""
    if len(configs) > 1:
        return StackedRuns(configs, data, world.device, steps_per_epoch), "fp32"
    recorded = runs[0].recorded_precision() if runs[0].checkpoint_epoch() else None
    precision = resolve_precision(configs[0].train.precision, world.device, recorded)
    return OneModelRun(task, configs[0], data, world, steps_per_epoch, precision), precision


def _resume(strategy, runs: list[RunWriter], device) -> tuple[int, list[float], list[dict], list[list[dict]]]:
    """Load the runs' checkpoints into the strategy: the start epoch, elapsed times, records and metric rows."""
    start = min(run.checkpoint_epoch() for run in runs)  # stacked runs cut between their writes: go back one
    if start == 0:
        return 0, [0.0] * len(runs), [{} for _ in runs], [[] for _ in runs]
    checkpoints = [run.checkpoint(map_location=device, epoch=start) for run in runs]
    if any(c is None for c in checkpoints):
        raise ValueError(f"runs to stack have no common checkpoint epoch (epochs "
                         f"{[run.checkpoint_epochs() for run in runs]}); resume them separately")
    strategy.load(checkpoints)
    for objective, checkpoint in zip(strategy.objectives, checkpoints, strict=True):
        objective.load_state_dict(checkpoint.objective)
    # checkpoints from before they carried rows: the rows come from metrics.jsonl (RunWriter.open)
    rows = [list(c.rows) if c.rows else [r.as_dict() for r in run.rows(up_to=start)]
            for c, run in zip(checkpoints, runs, strict=True)]
    return start, [c.elapsed for c in checkpoints], [dict(c.records) for c in checkpoints], rows


class TrainingDiverged(RuntimeError):
    """The loss became NaN or infinite; the run keeps its last good checkpoint. ``runs`` names the runs
    whose loss did (in a stacked group the others were still finite)."""

    def __init__(self, message: str, runs: tuple[str, ...] = ()):
        super().__init__(message)
        self.runs = tuple(runs)


def _stop_if_diverged(configs, runs, epoch: int, sums: list[list[float]], steps_per_epoch: int) -> None:
    """Stop, naming the epoch and step, when a run's loss was non-finite during this epoch (its rows
    and checkpoint are not written, so the last good checkpoint stays)."""
    bad = [(config, run, int(s[4])) for config, run, s in zip(configs, runs, sums, strict=True) if s[4] >= 0]
    if bad:
        where = "; ".join(f"{config.name}: epoch {epoch + 1}, step {step} (batch {step - epoch * steps_per_epoch + 1})"
                          for config, _, step in bad)
        raise TrainingDiverged(f"the loss became NaN or infinite, so training stopped ({where}). The run keeps "
                               f"its checkpoint of epoch {epoch}. Lower train.lr, check train.momentum and "
                               "train.weight_decay, or enable train.grad_clip; then rerun with --restart",
                               runs=tuple(config.name for config, _, _ in bad))


def _close_epoch(task: Task, strategy, m: int, config: ExperimentConfig, epoch: int, step: int, lr: float,
                 sums: list[float], records: dict) -> EpochRow:
    """Evaluate run m after an epoch, let its objective react, record samples; its metric row."""
    member, objective, data = strategy.members[m], strategy.objectives[m], strategy.eval_data
    loss_sum, ce_sum, correct, count, _ = sums
    beta = objective.beta_at(step - 1)  # the value the epoch's last step used
    every, last = config.train.test_every, epoch + 1 == config.train.epochs
    test = last or (every > 0 and (epoch + 1) % every == 0)  # train.test_every: 0 is after the last epoch only
    scores, val, val_logits = task.scores(member, data, config, test=test)
    objective.end_of_epoch(val, val_logits, task.val_labels(data))
    extra = {"val_ece": val["ece"]} if "ece" in val else {}
    if config.train.track_margin:
        stats = margin_statistics(member, data.normalize(data.train.images), data.train.labels)
        extra = {f"train_{k}": v for k, v in stats.items() if k != "order"}
    if epoch + 1 in config.train.record_epochs or epoch + 1 == config.train.epochs:
        records[epoch + 1] = task.record(member, data, config)
    return EpochRow(epoch + 1, step, beta, lr, loss_sum / count, ce_sum / count, correct / count, scores["val_ce"],
                    scores["val_acc"], scores["test_ce"], scores["test_acc"], 0.0, extra)
