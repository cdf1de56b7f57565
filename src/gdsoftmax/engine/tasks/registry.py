"""The tasks a run can be, and the one place that tells which a config is.

A new kind of training is a module with a :class:`~gdsoftmax.engine.tasks.base.Task` class and an entry in
:data:`TASKS`, and a branch in :func:`task_name` if a config names it by its data set.

>>> from gdsoftmax.engine.config.schema import parse_config
>>> task_for(parse_config({"data": {"dataset": "digits"}})).name
'images'
>>> text = {"data": {"dataset": "tinyshakespeare"}, "model": {"name": "gpt"}, "train": {"iterations": 250}}
>>> task_for(parse_config(text)).name
'tokens'
"""

from __future__ import annotations

from gdsoftmax.engine.config.schema import ExperimentConfig
from gdsoftmax.engine.data.text import is_text_dataset
from gdsoftmax.engine.tasks.base import Task
from gdsoftmax.engine.tasks.images import ImageClassification
from gdsoftmax.engine.tasks.tokens import NextTokenPrediction

__all__ = ["TASKS", "task_for", "task_name"]

TASKS: dict[str, Task] = {"images": ImageClassification(), "tokens": NextTokenPrediction()}


def task_name(config: ExperimentConfig) -> str:
    """Which task ``config`` trains: next-token prediction on a text corpus, else image classification."""
    return "tokens" if is_text_dataset(config.data.dataset) else "images"


def task_for(config: ExperimentConfig) -> Task:
    """The :class:`~gdsoftmax.engine.tasks.base.Task` that trains ``config``."""
    return TASKS[task_name(config)]
