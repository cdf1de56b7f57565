"""Engine options for accelerators: mixed precision, channels_last, torch.compile, determinism.

Each option also runs on the CPU (where it rarely pays), so the tests exercise every one:

* ``train.precision = "bf16"`` or ``"fp16"``: the model's forward runs under ``torch.autocast``
  and its outputs are cast to float32, so the β-loss is always computed in float32. "fp16"
  trains with a gradient scaler; its ``step`` reads the found-inf flag, one host
  synchronisation per step that "bf16" does not need.
* ``train.channels_last``: the model's 4-D weights and its image inputs in NHWC memory format.
* ``train.compile``: ``torch.compile`` of the model for training (evaluation runs it eagerly).
  The loss stays outside the compiled graph, so a β that changes every step (a warm-up) or
  every epoch (adaptive β) never recompiles; :func:`compiled_graphs` counts the graphs.
* ``train.deterministic``: deterministic algorithms only, no cuDNN autotuning, and the cuBLAS
  workspace setting that deterministic CUDA matmuls need.

>>> model = torch.nn.Linear(4, 3)
>>> fast = AcceleratedModel(model, precision="bf16", channels_last=False, device_type="cpu")
>>> fast(torch.randn(2, 4)).dtype
torch.float32
"""

from __future__ import annotations

import os

import torch
from torch import nn

__all__ = ["AcceleratedModel", "compiled_graphs", "gradient_scaler", "set_determinism", "training_model"]

AUTOCAST_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


class AcceleratedModel(nn.Module):
    """The model as the options run it: inputs in the chosen memory format, the forward under
    autocast, floating outputs (logits, features) returned in float32. It holds no parameters of
    its own, so the wrapped model's state_dict is what checkpoints keep."""

    def __init__(self, model: nn.Module, *, precision: str, channels_last: bool, device_type: str):
        super().__init__()
        self.model, self.channels_last, self.device_type = model, channels_last, device_type
        self.dtype = AUTOCAST_DTYPES.get(precision)

    def forward(self, x: torch.Tensor, *args, **kwargs):
        if self.channels_last and x.dim() == 4:
            x = x.contiguous(memory_format=torch.channels_last)
        if self.dtype is None:
            return self.model(x, *args, **kwargs)
        with torch.autocast(self.device_type, dtype=self.dtype):
            out = self.model(x, *args, **kwargs)
        return tuple(o.float() for o in out) if isinstance(out, tuple) else out.float()


def training_model(model: nn.Module, *, precision: str, channels_last: bool, compile: bool,
                   device_type: str) -> nn.Module:
    """``model`` wrapped for the options; the model itself when none is on (fp32, as before)."""
    if precision != "fp32" or channels_last:
        model = AcceleratedModel(model, precision=precision, channels_last=channels_last, device_type=device_type)
    return torch.compile(model) if compile else model


def gradient_scaler(precision: str, device_type: str) -> torch.amp.GradScaler | None:
    """A gradient scaler for "fp16" (whose small gradients would underflow), else None."""
    return torch.amp.GradScaler(device_type) if precision == "fp16" else None


def set_determinism(deterministic: bool, device_type: str) -> None:
    """Deterministic algorithms only, or (on CUDA) cuDNN autotuning for speed."""
    if deterministic:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")  # required by deterministic cuBLAS
    torch.use_deterministic_algorithms(deterministic)
    if device_type == "cuda":
        torch.backends.cudnn.benchmark = not deterministic
        torch.backends.cudnn.deterministic = deterministic


def compiled_graphs() -> int:
    """How many graphs torch.compile has built in this process so far (its recompile counter)."""
    from torch._dynamo.utils import counters

    return int(counters["stats"]["unique_graphs"])
