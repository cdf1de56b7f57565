"""The user's own ``nn.Module``, by import path: ``model.name = "mypkg.nets:build"``.

The callable is called with the data's class count and image shape as keywords (``num_classes``,
``image_shape`` as (C, H, W); those it does not take are left out) and ``model.options`` as further keywords,
and must return an ``nn.Module`` that maps a batch of images (B, C, H, W) to logits (B, num_classes). A class
that takes those arguments is a callable too.

:class:`UserModel` gives it what the engine asks of every model: ``model(x, return_features=True)`` returns the
logits and the penultimate features, read as the input of the module's last ``nn.Linear`` whose output is the
class count (the logits themselves where there is none). A tuple output (a main head and auxiliary ones) is
read by its first element. One forward pass on zeros checks the output's shape before any training.

>>> def build(num_classes, image_shape):
...     return torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(image_shape[0] * 8 * 8, num_classes))
>>> model = UserModel(build(10, (1, 8, 8)), 10)
>>> logits, features = model(torch.zeros(4, 1, 8, 8), return_features=True)
>>> tuple(logits.shape), tuple(features.shape)
((4, 10), (4, 64))
"""

from __future__ import annotations

import inspect

import torch
from torch import nn

from gdsoftmax.engine.workspace.user_code import UserCodeError, described, resolve

__all__ = ["UserModel", "build_user_model"]


class UserModel(nn.Module):
    """The user's module, with the engine's ``return_features``."""

    def __init__(self, module: nn.Module, num_classes: int):
        super().__init__()
        self.module = module
        heads = [name for name, m in module.named_modules()
                 if isinstance(m, nn.Linear) and m.out_features == num_classes]
        self._head = heads[-1] if heads else None

    def forward(self, x: torch.Tensor, return_features: bool = False):
        if not return_features:
            return _main(self.module(x))
        if self._head is None:
            logits = _main(self.module(x))
            return logits, logits
        captured = []
        handle = self.module.get_submodule(self._head).register_forward_hook(
            lambda module, args, output: captured.append(args[0]))
        try:
            logits = _main(self.module(x))
        finally:
            handle.remove()
        return logits, captured[-1].flatten(1)


def _main(output):
    return output[0] if isinstance(output, tuple | list) else output


def build_user_model(name: str, image_shape, num_classes: int, penultimate_dim: int | None = None,
                     **options) -> UserModel:
    """The module ``name`` builds for ``image_shape`` and ``num_classes``, checked by one forward pass."""
    if penultimate_dim:
        raise UserCodeError(f"model.penultimate_dim is for the built-in models; {name} is your own module: put "
                            "a bottleneck layer in it, and leave model.penultimate_dim at 0")
    factory = resolve(name, "model.name")
    given = {"num_classes": num_classes, "image_shape": tuple(image_shape)}
    arguments = {**_accepted(factory, given), **options}
    shown = ", ".join(f"{k}={v!r}" for k, v in arguments.items())
    try:
        module = factory(**arguments)
    except Exception as error:  # the user's code: any failure is theirs to see, in one line
        raise UserCodeError(f"model.name = {name!r}: calling it with ({shown}) raised {described(error)}") from error
    if not isinstance(module, nn.Module):
        raise UserCodeError(f"model.name = {name!r} returned a {type(module).__name__}, not a torch.nn.Module; "
                            "return the network itself")
    model = UserModel(module, num_classes)
    _check_output(model, name, tuple(image_shape), num_classes)
    return model


def _accepted(factory, given: dict) -> dict:
    """The entries of ``given`` that ``factory`` takes by name (all of them if it takes ``**kwargs``)."""
    try:
        parameters = inspect.signature(factory).parameters
    except (TypeError, ValueError):  # a builtin without a signature: pass everything
        return given
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters.values()):
        return given
    return {k: v for k, v in given.items() if k in parameters}


@torch.no_grad()
def _check_output(model: UserModel, name: str, image_shape: tuple, num_classes: int) -> None:
    was_training = model.training
    model.eval()
    try:
        logits = model(torch.zeros(2, *image_shape))
    except Exception as error:
        shape = ", ".join(map(str, (2, *image_shape)))
        raise UserCodeError(f"model.name = {name!r}: a forward pass on a batch of shape ({shape}) raised "
                            f"{described(error)}; the module must take images of the data's shape") from error
    finally:
        model.train(was_training)
    if not isinstance(logits, torch.Tensor) or tuple(logits.shape) != (2, num_classes):
        shape = tuple(logits.shape) if isinstance(logits, torch.Tensor) else type(logits).__name__
        raise UserCodeError(f"model.name = {name!r}: the module returns {shape} for a batch of 2; it must return "
                            f"logits of shape (batch, {num_classes}), one per class of the data")
