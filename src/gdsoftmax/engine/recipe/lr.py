"""The learning-rate schedule of a config, one optimizer step at a time, on ``torch.optim.lr_scheduler``.

``train.lr_schedule`` is "step" (the paper's: ``train.lr`` times ``train.lr_gamma`` at each milestone,
a fraction of ``train.epochs``), "cosine" (from ``train.lr`` down to ``train.min_lr`` at the last step)
or "constant"; ``train.warmup_epochs`` or ``train.warmup_steps`` put a linear warm-up before it, from
``lr / (W + 1)`` up to ``lr`` over W steps. Each is a closed-form multiplier of ``train.lr`` at step s
(:func:`lr_multiplier`), driven by a ``LambdaLR`` whose state the checkpoint keeps, as Hugging Face's
schedules are: the closed form gives the same rate at step s whether the run was resumed or not,
and the step decay the very floats the engine gave before (``lr * gamma ** k``; chaining the factor,
as ``MultiStepLR`` does, differs in the last bit for most rates). ``config`` is an
:class:`~gdsoftmax.engine.config.schema.ExperimentConfig`, read for its ``train`` section; it is not imported
here, because a config is checked against this package's catalogs and so stands above it.

>>> from gdsoftmax.engine.config.schema import parse_config
>>> config = parse_config({"train": {"epochs": 4, "lr": 0.1}})
>>> [round(learning_rate(config, e), 4) for e in range(4)]
[0.1, 0.1, 0.01, 0.001]
>>> cosine = parse_config({"train": {"epochs": 2, "lr": 1.0, "lr_schedule": "cosine", "warmup_steps": 1}})
>>> [round(lr_multiplier(cosine, 2, s), 3) for s in range(4)]
[0.5, 1.0, 0.5, 0.0]
"""

from __future__ import annotations

import math
from functools import partial

import torch

__all__ = ["LearningRateSchedule", "learning_rate", "lr_multiplier", "milestone_epochs", "schedule_changes",
           "warmup_steps"]


def milestone_epochs(config) -> list[int]:
    """The epochs (0-based) at which the step decay steps down: each fraction of ``train.epochs``, rounded.

    A milestone never falls on epoch 0 (the first epoch runs at ``train.lr``), and two never fall on
    the same epoch: a short run would otherwise take a ÷100 step at once (3 epochs: 0.5 and 0.75
    both round to epoch 2). A milestone pushed past the last epoch is dropped.

    >>> from gdsoftmax.engine.config.schema import parse_config
    >>> milestone_epochs(parse_config({"train": {"epochs": 3}})), milestone_epochs(parse_config({}))
    ([2], [50, 75])
    """
    epochs: list[int] = []
    for fraction in sorted(config.train.lr_milestones):
        epoch = max(1, round(fraction * config.train.epochs), epochs[-1] + 1 if epochs else 1)
        if epoch < config.train.epochs:
            epochs.append(epoch)
    return epochs


def warmup_steps(config, steps_per_epoch: int) -> int:
    return config.train.warmup_steps or round(config.train.warmup_epochs * steps_per_epoch)


def lr_multiplier(config, steps_per_epoch: int, step: int) -> float:
    """The factor of ``train.lr`` at optimizer step ``step`` (0-based)."""
    t = config.train
    warm = warmup_steps(config, steps_per_epoch)
    if step < warm:
        return (step + 1) / (warm + 1)
    if t.lr_schedule == "cosine":
        total = t.epochs * steps_per_epoch
        progress = min(1.0, (step - warm) / max(1, total - 1 - warm))
        floor = t.min_lr / t.lr
        return floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * progress))
    if t.lr_schedule == "step":
        passed = sum(step >= epoch * steps_per_epoch for epoch in milestone_epochs(config))
        return t.lr_gamma**passed
    return 1.0


def learning_rate(config, epoch: int, steps_per_epoch: int = 1) -> float:
    """The rate of the first step of ``epoch`` (0-based)."""
    return config.train.lr * lr_multiplier(config, steps_per_epoch, epoch * steps_per_epoch)


def schedule_changes(trained, wanted, epochs_done: int) -> list[int]:
    """The epochs (1-based) among the first ``epochs_done`` whose learning rates differ between two configs
    (a cosine schedule spans the whole run, so a run of another length differs from its second step on)."""
    t, w = trained.train, wanted.train
    if (t.lr_schedule, t.warmup_epochs, t.warmup_steps) != (w.lr_schedule, w.warmup_epochs, w.warmup_steps):
        return list(range(1, epochs_done + 1))
    if t.lr_schedule == "cosine" and (t.epochs, t.min_lr) != (w.epochs, w.min_lr):
        return list(range(1, epochs_done + 1))
    return [e + 1 for e in range(epochs_done) if learning_rate(trained, e) != learning_rate(wanted, e)]


class LearningRateSchedule:
    """Sets the rate of every optimizer step: ``train.lr * lr_multiplier(step) * factor()``, where ``factor``
    is the objective's learning-rate factor (the adaptive controller's compensation; 1 otherwise).

    Call :meth:`apply` before an epoch (the factor may have changed) and :meth:`step` after each
    optimizer step; ``used`` is the rate of the last step taken.
    """

    def __init__(self, optimizer: torch.optim.Optimizer, config, steps_per_epoch: int,
                 factor=lambda: 1.0):
        self.multiplier = partial(lr_multiplier, config, steps_per_epoch)
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, self.multiplier)
        self.factor = factor
        self.used = config.train.lr * self.multiplier(0)

    def apply(self) -> None:
        """Set each group's rate for the coming step (the scheduler's, times the current factor)."""
        step = self.scheduler.last_epoch
        for group, base in zip(self.scheduler.optimizer.param_groups, self.scheduler.base_lrs, strict=True):
            group["lr"] = base * self.multiplier(step) * self.factor()

    def step(self) -> None:
        self.used = self.scheduler.optimizer.param_groups[0]["lr"]
        self.scheduler.step()
        self.apply()

    def state_dict(self) -> dict:
        return {"scheduler": self.scheduler.state_dict(), "used": self.used}

    def load(self, state: dict, step: int) -> None:
        """Resume at optimizer step ``step``; ``state`` is empty for checkpoints written before schedules
        were kept (the closed form then gives the same rates)."""
        if state:
            self.scheduler.load_state_dict(state["scheduler"])
            self.used = float(state["used"])
        else:
            self.scheduler.last_epoch = step
        self.apply()
