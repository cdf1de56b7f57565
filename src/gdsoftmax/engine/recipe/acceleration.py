"""Engine options for accelerators: mixed precision, channels_last, torch.compile, determinism.

Each option also runs on the CPU (where it rarely pays), so the tests exercise every one:

* ``train.precision = "bf16"`` or ``"fp16"``: the model's forward runs under ``torch.autocast``
  and its outputs are cast to float32, so the β-loss is always computed in float32. "fp16"
  trains with a gradient scaler; its ``step`` reads the found-inf flag, one host
  synchronisation per step that "bf16" does not need. ``"auto"`` is bf16 where the device
  computes it natively (CUDA with bf16; a CPU with AMX or AVX512-BF16 units) and fp32 elsewhere:
  on an AVX2-only CPU, bf16 is emulated and a ResNet-9 step ran 12.7× slower than fp32.
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
import warnings

import torch
from torch import nn

__all__ = ["AcceleratedModel", "compiled_graphs", "gradient_scaler", "no_native_bf16", "resolve_precision",
           "set_determinism", "training_model"]

AUTOCAST_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}
# oneDNN's ISA caps (ONEDNN_MAX_CPU_ISA) under which its convolutions still use bf16 units
BF16_ISAS = ("ALL", "DEFAULT", "AVX512_CORE_BF16", "AVX512_CORE_AMX", "AVX512_CORE_AMX_FP16", "AVX10_1_512_AMX",
             "AVX10_1_512_AMX_FP16", "AVX10_2_512_AMX_2")
_warned: set[str] = set()


def no_native_bf16(device: torch.device) -> str | None:
    """Why ``device`` has no native bf16 arithmetic, or None when it has (CUDA with bf16; a CPU whose
    dispatch runs AVX-512 with AMX or AVX512-BF16 units, and oneDNN not capped below them)."""
    if device.type == "cuda":
        return None if torch.cuda.is_bf16_supported(including_emulation=False) else "this GPU has no bf16 units"
    if device.type != "cpu":
        return f"bf16 units are not detected on {device.type}"
    capability = torch.backends.cpu.get_cpu_capability()
    units = torch.cpu.get_capabilities()
    if not capability.startswith("AVX512"):
        return f"the CPU runs torch's {capability} kernels (no AVX-512), so bf16 is emulated"
    if not (units.get("amx_bf16") or units.get("avx512_bf16")):
        return "the CPU has neither AMX nor AVX512-BF16 units, so bf16 is emulated"
    isa = os.environ.get("ONEDNN_MAX_CPU_ISA", "ALL").upper()
    if isa not in BF16_ISAS:
        return f"ONEDNN_MAX_CPU_ISA={isa} keeps oneDNN off the CPU's bf16 units"
    return None


def resolve_precision(precision: str, device: torch.device, recorded: str | None = None) -> str:
    """The precision a run trains in: what it recorded when it started (a resumed run keeps it, on
    any machine), else "auto" resolved for ``device``; an explicit "bf16" where it is emulated warns
    once, with the reason.

    >>> resolve_precision("fp32", torch.device("cpu")), resolve_precision("auto", torch.device("cpu"), "bf16")
    ('fp32', 'bf16')
    """
    if recorded is not None:
        return recorded
    if precision == "auto":
        return "bf16" if no_native_bf16(device) is None else "fp32"
    why = no_native_bf16(device) if precision == "bf16" else None
    if why is not None and why not in _warned:
        _warned.add(why)
        warnings.warn(f'train.precision = "bf16" on {device.type}: {why}, and training can be many times slower '
                      'than fp32; "auto" picks bf16 only where it is native', RuntimeWarning, stacklevel=2)
    return precision


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
