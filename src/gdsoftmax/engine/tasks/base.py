"""The :class:`Task` protocol: everything that differs between kinds of training, and nothing else.

The loop (:mod:`gdsoftmax.engine.loop`) trains, checkpoints, resumes and writes a run the same way for every
kind; a task says what the data is, which model and objective it trains, how an epoch's batches are drawn, and
how the model is scored and recorded. A new kind of training is one module with a class that has these methods
and one entry in :data:`gdsoftmax.engine.tasks.registry.TASKS`.

The user's own model and data are not a task of their own: ``model.name = "mypkg.nets:build"`` and
``data.dataset = "mypkg.data:load"`` are inputs of the image task (the model and data registries resolve them).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, Protocol

import torch
from torch import nn

__all__ = ["Task", "TaskModel"]


@dataclass
class TaskModel:
    """What a task builds for one run: ``model`` (checkpointed, evaluated and tracked), ``module`` (what the
    objective calls in a training step: the model itself, or a view of it), the ``objective``, the optimizer's
    ``parameters`` (tensors or groups) and whether the model is laid out ``channels_last``."""

    model: nn.Module
    module: nn.Module
    objective: Any
    parameters: Any
    channels_last: bool = False


class Task(Protocol):
    """A kind of training. ``data`` is whatever :meth:`load` returns (it must have ``to(device)``,
    ``fingerprint()`` and ``name``); ``config`` is an :class:`~gdsoftmax.engine.config.schema.ExperimentConfig`."""

    name: str

    def load(self, config) -> Any:
        """The data ``config`` names, as stored (before :meth:`prepare`)."""

    def prepare(self, data, config) -> Any:
        """The data as the model sees it (e.g. the input scaling of images)."""

    def steps_per_epoch(self, data, config) -> int:
        """Optimizer steps in one of the loop's epochs (a round of evaluation)."""

    def build(self, data, config, steps_per_epoch: int) -> TaskModel:
        """The model, the module trained, the objective (with β's schedule) and the optimizer's parameters."""

    def batches(self, data, config, generator: torch.Generator, world, steps: int
                ) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """This process's share of each of an epoch's ``steps`` batches, ``(inputs, targets)``, drawn from
        ``generator`` (saved in the checkpoint, so that a resumed run draws the same)."""

    def scores(self, model, data, config, test: bool) -> tuple[dict, dict, torch.Tensor | None]:
        """The metric row's ``val_*`` and ``test_*`` entries, the validation metrics and validation logits."""

    def val_labels(self, data) -> torch.Tensor | None:
        """The validation labels an adaptive β reads with the validation logits (None where there are none)."""

    def record(self, model, data, config) -> dict:
        """Per recorded training sample: ``p_true`` and ``correct`` (``samples.npz``)."""

    def recorded_labels(self, data, config) -> torch.Tensor:
        """The labels of the samples :meth:`record` follows."""

    def predictions(self, model, data, config) -> dict:
        """The final predictions as arrays (``predictions.npz``)."""
