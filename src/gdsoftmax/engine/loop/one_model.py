"""The strategy that trains one model of any :class:`~gdsoftmax.engine.tasks.base.Task`, data-parallel when
launched by torchrun: it builds what every run needs in one order (determinism, precision, the task's model and
objective, optimizer, learning-rate schedule, gradient scaler, the data order's generator), steps an epoch of
the task's batches, and loads and captures a checkpoint's state.

The loop (:mod:`gdsoftmax.engine.loop.trainer`) reads ``members`` (the model evaluated), ``objectives``,
``eval_data``, ``load(checkpoints)``, ``state(m)``, ``learning_rates()`` and ``train_epoch(epoch)``, as it does
of :class:`~gdsoftmax.engine.loop.stacked.StackedRuns`.
"""

from __future__ import annotations

import torch
import torch.distributed as dist
import torch.nn.functional as F

from gdsoftmax.engine.config.schema import ExperimentConfig
from gdsoftmax.engine.recipe.acceleration import gradient_scaler, resolve_precision, set_determinism, training_model
from gdsoftmax.engine.recipe.lr import LearningRateSchedule
from gdsoftmax.engine.recipe.optim import build_optimizer
from gdsoftmax.engine.rundir.checkpoint import capture_rng_state, restore_rng_state
from gdsoftmax.engine.tasks.base import Task

__all__ = ["OneModelRun"]


class OneModelRun:
    """One model of ``task`` trained on ``data`` (prepared by the task) in ``world``'s processes."""

    def __init__(self, task: Task, config: ExperimentConfig, data, world, steps_per_epoch: int,
                 precision: str | None = None):
        self.task, self.config, self.world, self.steps_per_epoch = task, config, world, steps_per_epoch
        t, device_type = config.train, world.device.type
        precision = precision or resolve_precision(t.precision, world.device)
        set_determinism(t.deterministic, device_type)
        self.eval_data = data.to(world.device)
        built = task.build(data, config, steps_per_epoch)
        memory_format = torch.channels_last if built.channels_last else torch.preserve_format
        built.module.to(world.device, memory_format=memory_format)
        self.model, objective = built.model, built.objective
        self.trained = training_model(world.wrap(built.module), precision=precision, channels_last=built.channels_last,
                                      compile=t.compile, device_type=device_type)
        evaluated = training_model(self.model, precision=precision, channels_last=built.channels_last,
                                   compile=False, device_type=device_type)
        self.optimizer = build_optimizer(built.parameters, t)
        self.schedule = LearningRateSchedule(self.optimizer, config, steps_per_epoch, lambda: objective.lr_factor)
        self.scaler = gradient_scaler(precision, device_type)
        self.generator = torch.Generator().manual_seed(config.seed)  # data order and augmentation
        self.members, self.objectives = [evaluated], [objective]

    def train_epoch(self, epoch: int) -> torch.Tensor:
        """One epoch; the sums of loss, CE, correct and count over all ranks and the first step whose loss was
        not finite (-1 if none), (1, 5). The step loop reads nothing back from the device. CE and correct are
        NaN where the objective returns no logits (the fused linear loss of a language model)."""
        world, objective, device = self.world, self.objectives[0], self.world.device
        self.schedule.apply()  # the objective's lr factor may have moved at the end of the last epoch
        self.trained.train()
        totals = torch.zeros(4, dtype=torch.float64, device=device)  # loss, ce, correct, count
        first_bad = torch.full((1,), -1.0, dtype=torch.float64, device=device)  # first non-finite step
        batches = self.task.batches(self.eval_data, self.config, self.generator, world, self.steps_per_epoch)
        for i, (x, y) in enumerate(batches):
            step = epoch * self.steps_per_epoch + i
            loss, logits = objective(self.trained, x, y, step)
            self._step(loss)
            self.schedule.step()
            with torch.no_grad():  # device tensors only: no host sync inside the step loop
                if logits is None:
                    ce = correct = torch.full((), float("nan"), dtype=torch.float64, device=device)
                else:
                    ce = F.cross_entropy(logits.float(), y, reduction="sum").double()
                    correct = (logits.argmax(1) == y).sum().double()
                totals += torch.stack([(loss * len(y)).double(), ce, correct, totals.new_tensor(float(len(y)))])
                first_bad = torch.where(~loss.isfinite() & (first_bad < 0), float(step), first_bad)
        world.all_reduce(totals)
        world.all_reduce(first_bad, op=dist.ReduceOp.MAX)  # every rank stops if one saw a non-finite loss
        return torch.cat([totals, first_bad]).unsqueeze(0)

    def load(self, checkpoints) -> None:
        (checkpoint,) = checkpoints
        self.model.load_state_dict(checkpoint.model)
        self.optimizer.load_state_dict(checkpoint.optimizer)
        if self.scaler is not None and checkpoint.scaler:
            self.scaler.load_state_dict(checkpoint.scaler)
        restore_rng_state(checkpoint.rng, self.generator)
        self.schedule.load(checkpoint.schedule, checkpoint.step)

    def state(self, m: int) -> tuple[dict, dict, dict, dict, dict]:
        scaler = self.scaler.state_dict() if self.scaler is not None else {}
        return (self.model.state_dict(), self.optimizer.state_dict(), capture_rng_state(self.generator), scaler,
                self.schedule.state_dict())

    def learning_rates(self) -> list[float]:
        return [self.schedule.used]

    def _step(self, loss: torch.Tensor) -> None:
        """Backward, clip and update; with a gradient scaler for fp16."""
        clip = self.config.train.grad_clip
        self.optimizer.zero_grad(set_to_none=True)
        if self.scaler is None:
            loss.backward()
            if clip > 0:
                torch.nn.utils.clip_grad_norm_(self.model.parameters(), clip)
            self.optimizer.step()
            return
        self.scaler.scale(loss).backward()
        if clip > 0:
            self.scaler.unscale_(self.optimizer)
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), clip)
        self.scaler.step(self.optimizer)
        self.scaler.update()
