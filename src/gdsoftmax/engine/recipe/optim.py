"""The optimizer of a config, from ``torch.optim`` by name (``train.optimizer``), with
``train.weight_decay`` (L2 for SGD, decoupled for AdamW), ``train.momentum`` (SGD only) and the
optimizer's other arguments from ``train.optimizer_options``, checked against its signature.

>>> import torch
>>> from gdsoftmax.engine.config.schema import parse_config
>>> config = parse_config({"train": {"optimizer": "adamw", "optimizer_options": {"betas": [0.9, 0.99]}}})
>>> type(build_optimizer([torch.zeros(2, requires_grad=True)], config.train)).__name__
'AdamW'
"""

from __future__ import annotations

import inspect

import torch

__all__ = ["OPTIMIZERS", "build_optimizer", "optimizer_option_names"]

OPTIMIZERS = {"sgd": torch.optim.SGD, "adamw": torch.optim.AdamW}
# set from the train table's own keys, so options may not give them again
_FROM_KEYS = {"params", "lr", "weight_decay", "momentum"}


def optimizer_option_names(name: str) -> list[str]:
    """The arguments ``train.optimizer_options`` may give the optimizer ``name``."""
    return [p for p in inspect.signature(OPTIMIZERS[name]).parameters if p not in _FROM_KEYS]


def build_optimizer(params, train) -> torch.optim.Optimizer:
    """The optimizer of a config's ``train`` table (the config module checks its settings with this)."""
    t = train
    options = {k: tuple(v) if isinstance(v, list) else v for k, v in t.optimizer_options.items()}
    if t.optimizer == "sgd":
        return torch.optim.SGD(params, lr=t.lr, momentum=t.momentum, weight_decay=t.weight_decay, **options)
    return OPTIMIZERS[t.optimizer](params, lr=t.lr, weight_decay=t.weight_decay, **options)
