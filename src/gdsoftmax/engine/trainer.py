"""The training loop: config -> data -> model -> train -> metrics -> run directory.

One loop trains one run, or M runs at once: how a step is computed is a strategy, what a run
is (its rows, checkpoints, resumption and final files, through :class:`gdsoftmax.engine.rundir.writer.RunWriter`)
is the loop's. :class:`SingleRun` is the ordinary step (optionally data-parallel under
torchrun); :class:`gdsoftmax.engine.stacked.StackedRuns` trains runs that differ only in beta
and seed as one stacked model. A strategy has ``members`` (one model per run, for evaluation),
``objectives``, ``eval_data``, ``load(checkpoints)``, ``state(m)``, ``learning_rates()`` (each run's
rate of its last step) and ``train_epoch(epoch) -> (M, 5)``: sums of loss, CE, correct and count,
and the first step with a non-finite loss (-1 if none), which stops the run. The optimizer and its
learning-rate schedule come from :mod:`gdsoftmax.engine.optim` and :mod:`gdsoftmax.engine.lr`.

A run killed at any moment resumes from its last checkpoint and ends bit-identical to one that
was never interrupted: data order and augmentation come from a generator saved in the checkpoint,
and metric rows written after that checkpoint are dropped on resume, so none is duplicated.
"""

from __future__ import annotations

import contextlib
import datetime
import math
import os
import time
from pathlib import Path

import torch
import torch.distributed as dist
import torch.nn.functional as F
from tqdm.auto import tqdm

from gdsoftmax.analysis.margins import margin_statistics
from gdsoftmax.engine.acceleration import (
    compiled_graphs,
    gradient_scaler,
    resolve_precision,
    set_determinism,
    training_model,
)
from gdsoftmax.engine.checkpoint import seed_everything
from gdsoftmax.engine.cleanup import folders_removed_on_failure
from gdsoftmax.engine.config import ConfigError, ExperimentConfig
from gdsoftmax.engine.data import Dataset, crop_and_flip, draw_augmentation, load_dataset, with_input_scaling
from gdsoftmax.engine.evaluation import evaluation_scores, final_predictions, per_sample_record, recorded_labels
from gdsoftmax.engine.language import TokenStreamRun
from gdsoftmax.engine.loggers import open_loggers, require_loggers
from gdsoftmax.engine.lr import LearningRateSchedule, learning_rate
from gdsoftmax.engine.models import build_model
from gdsoftmax.engine.objectives import build_objective
from gdsoftmax.engine.one_model import OneModelRun
from gdsoftmax.engine.optim import build_optimizer
from gdsoftmax.engine.rundir.records import Checkpoint, EpochRow, RunMismatchError, RunResult
from gdsoftmax.engine.rundir.writer import RunWriter
from gdsoftmax.engine.stacked import StackedRuns
from gdsoftmax.engine.text import TextData, is_text_dataset, load_text

__all__ = ["SingleRun", "TrainingDiverged", "learning_rate", "load_run_data", "run_experiment", "train"]


def run_experiment(config: ExperimentConfig, run_dir: str | Path, *, data: Dataset | None = None,
                   progress: bool = True, restart: bool = False, on_epoch=None) -> dict:
    """Train one config in ``run_dir`` (resuming if it holds a checkpoint of it); return the summary."""
    return train([config], [run_dir], data=data, progress=progress, restart=restart, on_epoch=on_epoch)[0]


def train(configs: list[ExperimentConfig], run_dirs: list[str | Path], *, data: Dataset | None = None,
          progress: bool = True, restart: bool = False, on_epoch=None, labels: list | None = None,
          out_dir: str | Path | None = None) -> list[dict]:
    """Train ``configs`` (one, or several that stack) in their run directories; return their summaries.

    A run directory that holds a run of another config is refused (RunMismatchError), unless
    ``restart`` discards it; a run directory that another process is writing is refused too.
    ``on_epoch(row)`` is called with the first run's metric row once its epoch is written (a
    search's pruner: an exception it raises stops training, the checkpoint of that epoch kept).
    ``labels`` (one :class:`~gdsoftmax.engine.tracking.RunLabels` per config) name and group the runs in
    the trackers ``train.log`` lists; ``out_dir`` holds MLflow's default store.
    """
    runs = [RunWriter(d) for d in run_dirs]
    require_loggers(configs)
    world = _Distributed.from_environment(configs[0].train.device)
    with contextlib.ExitStack() as locks:
        for run in runs:  # a run that fails before it writes anything leaves no empty folder behind
            locks.enter_context(folders_removed_on_failure(run.path, depth=0))
        if world.is_main:  # the lock first: nothing of a run that another process writes is touched
            for run in runs:
                locks.enter_context(run.lock())
            for run, config in zip(runs, configs, strict=True):
                if restart:
                    run.restart()
                run.claim(config)
        tracking = (labels or [None] * len(configs), None if out_dir is None else Path(out_dir))
        return _train(configs, runs, world, data, progress, on_epoch, tracking)


def _train(configs: list[ExperimentConfig], runs: list[RunWriter], world: _Distributed, data: Dataset | None,
           progress: bool, on_epoch=None, tracking=((), None)) -> list[dict]:
    first = configs[0]
    seed_everything(first.seed)
    data = load_run_data(first) if data is None else data
    text = isinstance(data, TextData)  # a language model: an "epoch" is a round of train.eval_every steps
    data = data if text else with_input_scaling(data, first.data.input_scaling)
    steps_per_epoch = first.train.eval_every if text else math.ceil(len(data.train) / first.train.batch_size)
    _refuse_unfinished_warmups(configs, steps_per_epoch)
    graphs_before = compiled_graphs() if first.train.compile else None
    fingerprint = _same_data_as_before(runs, data)
    strategy, precision = _strategy(configs, runs, data, world, steps_per_epoch)
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
            row = _close_epoch(strategy, m, config, epoch, step, lrs[m], sums[m], records[m])
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

    labels = recorded_labels(strategy.eval_data, first).cpu().numpy()
    graphs = None if graphs_before is None else compiled_graphs() - graphs_before
    summaries = [run.finish(config, records[m], labels, final_predictions(strategy.members[m], strategy.eval_data,
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


def load_run_data(config: ExperimentConfig) -> Dataset | TextData:
    """The data a config trains on: an image data set, or a tokenized text corpus."""
    d = config.data
    if is_text_dataset(d.dataset):
        return load_text(d.dataset, d.data_dir or None, context=d.context, download=d.download, val_size=d.val_size,
                         tokenizer=d.tokenizer, vocab_size=d.vocab_size)
    return load_dataset(d.dataset, d.data_dir or None, download=d.download, val_size=d.val_size,
                        split_seed=d.split_seed, train_size=d.train_size)


def _same_data_as_before(runs: list[RunWriter], data: Dataset) -> str:
    """The data's fingerprint; a run resumed on data whose content changed since it started is refused."""
    fingerprint = data.fingerprint()
    for run in runs:
        recorded = run.recorded_data() if run.checkpoint_epoch() else None
        if recorded is not None and recorded != fingerprint:
            raise RunMismatchError(f"{run.path} started on other data than it would resume on: {data.name}'s files "
                                   "changed since (another copy, a new download or another split). Train it anew "
                                   "with --restart, or point --data-dir at the data it started on")
    return fingerprint


def _strategy(configs, runs: list[RunWriter], data: Dataset, world: _Distributed, steps_per_epoch: int):
    """The strategy that trains ``configs``, and the precision it trains in: a resumed run keeps the one
    it recorded when it started; stacked runs are always float32 (other precisions train alone)."""
    if len(configs) > 1:
        return StackedRuns(configs, data, world.device, steps_per_epoch), "fp32"
    recorded = runs[0].recorded_precision() if runs[0].checkpoint_epoch() else None
    precision = resolve_precision(configs[0].train.precision, world.device, recorded)
    strategy = TokenStreamRun if isinstance(data, TextData) else SingleRun
    return strategy(configs[0], data, world, steps_per_epoch, precision), precision


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


def _close_epoch(strategy, m: int, config: ExperimentConfig, epoch: int, step: int, lr: float, sums: list[float],
                 records: dict) -> EpochRow:
    """Evaluate run m after an epoch, let its objective react, record samples; its metric row."""
    member, objective, data = strategy.members[m], strategy.objectives[m], strategy.eval_data
    loss_sum, ce_sum, correct, count, _ = sums
    beta = objective.beta_at(step - 1)  # the value the epoch's last step used
    every, last = config.train.test_every, epoch + 1 == config.train.epochs
    test = last or (every > 0 and (epoch + 1) % every == 0)  # train.test_every: 0 is after the last epoch only
    scores, val, val_logits = evaluation_scores(member, data, config, test=test)
    objective.end_of_epoch(val, val_logits, getattr(data.val, "labels", None))  # a token stream has no labels
    extra = {"val_ece": val["ece"]} if "ece" in val else {}
    if config.train.track_margin:
        stats = margin_statistics(member, data.normalize(data.train.images), data.train.labels)
        extra = {f"train_{k}": v for k, v in stats.items() if k != "order"}
    if epoch + 1 in config.train.record_epochs or epoch + 1 == config.train.epochs:
        records[epoch + 1] = per_sample_record(member, data, config)
    return EpochRow(epoch + 1, step, beta, lr, loss_sum / count, ce_sum / count, correct / count, scores["val_ce"],
                    scores["val_acc"], scores["test_ce"], scores["test_acc"], 0.0, extra)


class SingleRun(OneModelRun):
    """One model, data-parallel when launched by torchrun: the ordinary training step, with the
    options of :mod:`gdsoftmax.engine.acceleration` (precision, channels_last, compile)."""

    def __init__(self, config: ExperimentConfig, data: Dataset, world: _Distributed, steps_per_epoch: int,
                 precision: str | None = None):
        self.config, self.world, self.steps_per_epoch = config, world, steps_per_epoch
        t, device_type = config.train, world.device.type
        precision = precision or resolve_precision(t.precision, world.device)
        set_determinism(t.deterministic, device_type)
        self.eval_data = data.to(world.device)
        model = build_model(config.model.name, data.image_shape, data.num_classes,
                            config.model.penultimate_dim or None, **config.model.options)
        objective = build_objective(config.loss.name, config.loss.options, model,  # may install a margin head
                                    beta=config.loss.beta.schedule(steps_per_epoch), tau=config.loss.tau,
                                    label_smoothing=config.loss.label_smoothing, backend=config.loss.backend,
                                    numerics=config.loss.numerics)
        memory_format = torch.channels_last if t.channels_last else torch.preserve_format
        self.model = model.to(world.device, memory_format=memory_format)
        self.trained = training_model(world.wrap(self.model), precision=precision, channels_last=t.channels_last,
                                      compile=t.compile, device_type=device_type)
        evaluated = training_model(self.model, precision=precision, channels_last=t.channels_last, compile=False,
                                   device_type=device_type)
        self.optimizer = build_optimizer(self.model.parameters(), config.train)
        self.schedule = LearningRateSchedule(self.optimizer, config, steps_per_epoch, lambda: objective.lr_factor)
        self.scaler = gradient_scaler(precision, device_type)
        self.generator = torch.Generator().manual_seed(config.seed)  # data order and augmentation
        self.members, self.objectives = [evaluated], [objective]

    def train_epoch(self, epoch: int) -> torch.Tensor:
        """One epoch; the sums of loss, CE, correct and count over all ranks and the first step whose loss
        was not finite (-1 if none), (1, 5). The step loop
        reads nothing back from the device: the epoch's order and augmentation are drawn up front."""
        config, data, world, objective = self.config, self.eval_data, self.world, self.objectives[0]
        self.schedule.apply()  # the objective's lr factor may have moved at the end of the last epoch
        self.trained.train()
        n_train, batch_size = len(data.train), config.train.batch_size
        totals = torch.zeros(4, dtype=torch.float64, device=world.device)  # loss, ce, correct, count
        first_bad = torch.full((1,), -1.0, dtype=torch.float64, device=world.device)  # first non-finite step
        order = torch.randperm(n_train, generator=self.generator)
        if config.data.augment:  # drawn in the same sequence as batch-by-batch augment_batch calls
            sizes = [len(order[i * batch_size : (i + 1) * batch_size]) for i in range(self.steps_per_epoch)]
            shifts = [t.to(world.device) for t in draw_augmentation(self.generator, sizes)]
        order = order.to(world.device)
        for i in range(self.steps_per_epoch):
            step, batch = epoch * self.steps_per_epoch + i, slice(i * batch_size, (i + 1) * batch_size)
            index = order[batch]
            images = data.train.images[index]  # (B, C, H, W) uint8, the global batch
            if config.data.augment:
                images = crop_and_flip(images, *(t[batch] for t in shifts))
            mine = slice(world.rank, None, world.size)  # this process's share of the global batch
            x, y = data.normalize(images[mine]), data.train.labels[index][mine]
            loss, logits = objective(self.trained, x, y, step)  # logits (b, K) float32
            self._step(loss)
            self.schedule.step()
            with torch.no_grad():  # device tensors only: no host sync inside the step loop
                totals += torch.stack([(loss * len(y)).double(), F.cross_entropy(logits, y, reduction="sum").double(),
                                       (logits.argmax(1) == y).sum().double(), totals.new_tensor(float(len(y)))])
                first_bad = torch.where(~loss.isfinite() & (first_bad < 0), float(step), first_bad)
        world.all_reduce(totals)
        world.all_reduce(first_bad, op=dist.ReduceOp.MAX)  # every rank stops if one saw a non-finite loss
        return torch.cat([totals, first_bad]).unsqueeze(0)



class _Distributed:
    """Single process, or one rank of a torchrun launch (gloo on CPU, nccl on GPU)."""

    def __init__(self, rank: int, size: int, device: torch.device):
        self.rank, self.size, self.device = rank, size, device
        self.is_main = rank == 0

    @classmethod
    def from_environment(cls, device_name: str) -> _Distributed:
        size = int(os.environ.get("WORLD_SIZE", "1"))
        if device_name == "auto":
            device_name = "cuda" if torch.cuda.is_available() else "cpu"
        cuda = device_name.startswith("cuda")
        if cuda and not torch.cuda.is_available():
            raise ValueError(f"train.device is {device_name!r} but no CUDA device is available here; "
                             "use train.device=auto (or cpu)")
        if device_name.startswith("mps") and not torch.backends.mps.is_available():
            raise ValueError(f"train.device is {device_name!r} but this machine has no Apple GPU (MPS) that torch "
                             "can use; use train.device=auto (or cpu)")
        if size == 1 and "RANK" in os.environ and os.environ["RANK"] != "0":
            raise ValueError(f"RANK={os.environ['RANK']} is set but WORLD_SIZE is not: start data-parallel runs with "
                             "torchrun (torchrun --nproc_per_node N -m gdsoftmax train CONFIG), or unset RANK")
        if size == 1:
            return cls(0, 1, torch.device(device_name))
        local_rank = int(os.environ.get("LOCAL_RANK", "0"))
        device = torch.device(f"cuda:{local_rank}") if cuda else torch.device("cpu")
        if not dist.is_initialized():
            seconds = float(os.environ.get("GDSOFTMAX_DIST_TIMEOUT", "300"))
            try:
                dist.init_process_group("nccl" if cuda else "gloo", timeout=datetime.timedelta(seconds=seconds))
            except (RuntimeError, ValueError, dist.DistStoreError) as error:
                raise ValueError(f"rank {os.environ.get('RANK', '?')} of {size} could not reach the other processes "
                                 f"within {seconds:g} s ({str(error).splitlines()[0][:120]}); start every rank with "
                                 "torchrun (or set MASTER_ADDR and MASTER_PORT for all), or raise "
                                 "GDSOFTMAX_DIST_TIMEOUT") from error
        return cls(dist.get_rank(), size, device)

    def wrap(self, model: torch.nn.Module) -> torch.nn.Module:
        if self.size == 1:
            return model
        ids = [self.device.index] if self.device.type == "cuda" else None
        return torch.nn.parallel.DistributedDataParallel(model, device_ids=ids)

    def all_reduce(self, tensor: torch.Tensor, op=dist.ReduceOp.SUM) -> None:
        if self.size > 1:
            dist.all_reduce(tensor, op=op)

    def barrier(self) -> None:
        if self.size > 1:
            dist.barrier()

    def close(self) -> None:
        if self.size > 1 and dist.is_initialized():
            dist.destroy_process_group()
