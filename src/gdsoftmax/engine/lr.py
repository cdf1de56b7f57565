"""The learning-rate schedule of a config: a pure function of the epoch.

The step decay multiplies ``train.lr`` by ``train.lr_gamma`` at each milestone, a fraction of
``train.epochs``; so the schedule of a run depends on its length, and a run may be extended only
where the epochs it already trained keep their rates (:meth:`gdsoftmax.engine.rundir.view.RunView.mismatch`).

>>> from gdsoftmax.engine.config import parse_config
>>> config = parse_config({"train": {"epochs": 4, "lr": 0.1}})
>>> [round(learning_rate(config, e), 4) for e in range(4)]
[0.1, 0.1, 0.01, 0.001]
"""

from __future__ import annotations

from gdsoftmax.engine.config import ExperimentConfig

__all__ = ["learning_rate", "milestone_epochs", "schedule_changes"]


def milestone_epochs(config: ExperimentConfig) -> list[int]:
    """The epochs (0-based) at which the lr steps down: each fraction of ``train.epochs``, rounded.

    A milestone never falls on epoch 0 (the first epoch runs at ``train.lr``), and two never fall on
    the same epoch: a short run would otherwise take a ÷100 step at once (3 epochs: 0.5 and 0.75
    both round to epoch 2). A milestone pushed past the last epoch is dropped.

    >>> from gdsoftmax.engine.config import parse_config
    >>> milestone_epochs(parse_config({"train": {"epochs": 3}})), milestone_epochs(parse_config({}))
    ([2], [50, 75])
    """
    epochs: list[int] = []
    for fraction in sorted(config.train.lr_milestones):
        epoch = max(1, round(fraction * config.train.epochs), epochs[-1] + 1 if epochs else 1)
        if epoch < config.train.epochs:
            epochs.append(epoch)
    return epochs


def learning_rate(config: ExperimentConfig, epoch: int) -> float:
    """The step decay: lr * gamma^(number of milestones already passed). Pure in ``epoch``."""
    passed = sum(epoch >= milestone for milestone in milestone_epochs(config))
    return config.train.lr * config.train.lr_gamma**passed


def schedule_changes(trained: ExperimentConfig, wanted: ExperimentConfig, epochs_done: int) -> list[int]:
    """The epochs (1-based) among the first ``epochs_done`` whose learning rate differs between two configs."""
    return [e + 1 for e in range(epochs_done) if learning_rate(trained, e) != learning_rate(wanted, e)]
