"""Argument checks shared by the functional loss and its module.

Every check raises the exception *type* that ``torch.nn.functional.cross_entropy``
raises for the same mistake, so code that catches those keeps working, but the
messages say what was wrong and how to fix it.
"""

from __future__ import annotations

import math
import numbers
from dataclasses import dataclass

import numpy as np
import torch

_REDUCTIONS = ("none", "mean", "sum")
_CLASS_INDEX_DTYPES = (torch.int64, torch.uint8)


def is_real(value: object) -> bool:
    """A real number: Python's, numpy's (np.float32 is no ``float``) or any other ``numbers.Real``; not a bool.

    >>> import numpy as np
    >>> is_real(np.float32(0.5)), is_real(2), is_real(True), is_real("0.5")
    (True, True, False, False)
    """
    return isinstance(value, numbers.Real) and not isinstance(value, bool | np.bool_)


def check_positive(name: str, value: object) -> float:
    """Return ``value`` as a float, or raise ValueError unless it is finite and > 0.

    >>> check_positive("beta", 0.5)
    0.5
    """
    if isinstance(value, torch.Tensor):
        if value.numel() != 1:
            raise ValueError(f"{name} must be a single number, got a tensor of shape {tuple(value.shape)}")
        if value.requires_grad:  # .item() would cut the graph without a word: no gradient would reach it
            raise ValueError(f"{name} is a hyperparameter and gets no gradient here, but the tensor given requires "
                             f"one; pass {name}.detach() (or a float), or learn it with a loss of your own")
        value = value.item()
    if not is_real(value):
        raise TypeError(f"{name} must be a number, got {type(value).__name__}")
    value = float(value)
    if not math.isfinite(value) or value <= 0.0:
        raise ValueError(f"{name} must be a finite number > 0, got {value!r}")
    return value


def check_reduction(reduction: object) -> str:
    if reduction not in _REDUCTIONS:
        raise ValueError(f"{reduction!r} is not a valid value for reduction; use one of {_REDUCTIONS}")
    return reduction  # type: ignore[return-value]


def check_label_smoothing(label_smoothing: object) -> float:
    if not is_real(label_smoothing):
        raise TypeError(f"label_smoothing must be a number in [0, 1], got {type(label_smoothing).__name__}")
    value = float(label_smoothing)
    if value > 1.0:
        # RuntimeError because that is what F.cross_entropy raises here.
        raise RuntimeError(f"label_smoothing must be between 0.0 and 1.0, got {value!r}")
    if not value >= 0.0:  # also catches NaN, which F.cross_entropy silently accepts
        raise ValueError(f"label_smoothing must be between 0.0 and 1.0, got {value!r}")
    return value


def check_ignore_index(ignore_index: object) -> int:
    if isinstance(ignore_index, bool) or not isinstance(ignore_index, int):
        raise TypeError(f"ignore_index must be an int, got {type(ignore_index).__name__}")
    if not -(2**63) <= ignore_index < 2**63:
        # ValueError because that is what F.cross_entropy raises here ("Overflow when unpacking long long")
        raise ValueError(f"ignore_index must fit in a 64-bit integer, got {ignore_index}")
    return ignore_index


def check_weight(weight: torch.Tensor | None, num_classes: int | None = None,
                 dtype: torch.dtype | None = None) -> None:
    """Check a class-weight vector; ``num_classes``/``dtype`` are checked when known."""
    if weight is None:
        return
    if not isinstance(weight, torch.Tensor):
        raise TypeError(f"weight must be a Tensor of shape (C,) or None, got {type(weight).__name__}")
    if num_classes is None:
        if weight.dim() != 1:
            raise RuntimeError(f"weight must be a 1-D tensor of shape (C,), got shape {list(weight.shape)}")
        return
    if weight.dim() != 1 or weight.numel() != num_classes:
        raise RuntimeError(
            f"weight must hold one value per class: expected shape [{num_classes}], got {list(weight.shape)}"
        )
    if dtype is not None and weight.dtype != dtype:
        raise RuntimeError(
            f"weight has dtype {weight.dtype} but input has dtype {dtype}; convert it with weight.to(input.dtype)"
        )


@dataclass(frozen=True)
class TargetKind:
    """How to read the target: class indices or class probabilities, batched or not."""

    probabilities: bool
    unbatched: bool


def check_input_and_target(input: object, target: object, ignore_index: int) -> TargetKind:
    """Mirror F.cross_entropy's dispatch and shape rules; return how to read ``target``."""
    if not isinstance(input, torch.Tensor):
        raise TypeError(f"input must be a Tensor of logits, got {type(input).__name__}")
    if not isinstance(target, torch.Tensor):
        raise TypeError(f"target must be a Tensor, got {type(target).__name__}")
    if input.dim() == 0:
        raise RuntimeError("input must have a class dimension: expected shape (C,), (N, C) or (N, C, d1, ...), "
                           "got a 0-dimensional tensor")
    if not input.is_floating_point():
        raise NotImplementedError(f"gradient_decay_loss needs floating-point logits, got dtype {input.dtype}; "
                                  "convert with input.float()")
    unbatched = input.dim() == 1

    # Same rule as F.cross_entropy: equal shapes mean class probabilities.
    if target.shape == input.shape:
        if not target.is_floating_point():
            raise RuntimeError(f"a target with the input's shape {list(input.shape)} is read as class "
                               f"probabilities and must be floating point, got {target.dtype}")
        if ignore_index >= 0:
            raise RuntimeError("ignore_index is not supported for class-probability targets; "
                               "give ignored rows zero probability instead")
        return TargetKind(probabilities=True, unbatched=unbatched)

    if target.dtype not in _CLASS_INDEX_DTYPES:
        raise RuntimeError(f"class-index targets must have dtype torch.long (or uint8), got {target.dtype}; "
                           f"for class probabilities pass a float target of the input's shape {list(input.shape)}")
    if unbatched:
        if target.dim() == 1 and target.numel() != 1:
            raise ValueError(f"for 1-D input (C,) the target must be a scalar class index, "
                             f"got shape {list(target.shape)}")
        if target.dim() > 1:
            raise RuntimeError(f"for 1-D input (C,) the target must be a scalar class index, "
                               f"got shape {list(target.shape)}")
        return TargetKind(probabilities=False, unbatched=True)

    target_batch = target.shape[0] if target.dim() > 0 else 0
    if target_batch != input.shape[0]:
        raise ValueError(f"Expected input batch_size ({input.shape[0]}) to match target batch_size "
                         f"({target_batch}).")
    expected = [input.shape[0], *input.shape[2:]]
    if list(target.shape) != expected:
        raise RuntimeError(f"class-index target must have shape {expected} for input of shape "
                           f"{list(input.shape)}, got {list(target.shape)}")
    return TargetKind(probabilities=False, unbatched=False)


def check_class_indices(target: torch.Tensor, num_classes: int, ignore_index: int) -> None:
    """Raise IndexError for a class index outside [0, C) that is not ``ignore_index``."""
    if torch.compiler.is_compiling():
        return  # under torch.compile a host-side check would break the graph; gather still checks the bounds
    is_wrapped = getattr(torch._C._functorch, "is_functorch_wrapped_tensor", None)
    if is_wrapped is not None and is_wrapped(target):
        return  # under torch.func.vmap a host-side check is data-dependent control flow; gather still checks
    target = target.long()
    bad = (target != ignore_index) & ((target < 0) | (target >= num_classes))
    if target.device.type != "cpu" and hasattr(torch, "_assert_async"):
        # On accelerators a host check would synchronise every step; assert on the device instead,
        # as F.cross_entropy does there.
        torch._assert_async(~bad.any(), "gradient_decay_loss: a target class index is out of bounds")
        return
    if bool(bad.any()):
        first = int(target[bad].flatten()[0])
        raise IndexError(f"Target {first} is out of bounds: class indices must lie in [0, {num_classes}) "
                         f"or equal ignore_index ({ignore_index}).")
