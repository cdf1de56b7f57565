"""The gradient-decay softmax loss, functional form, and the choice of kernel behind it.

For logits z, target class c, temperature tau and gradient-decay factor beta::

    J = -log( e^{z_c/tau} / (sum_{i != c} e^{z_i/tau} + beta * e^{z_c/tau}) )

beta = 1 is cross-entropy. Three kernels compute it, with the same formulas:

* ``"composite"`` (:mod:`gdsoftmax.loss.composite`): PyTorch ops; every input, every order of
  gradient, ``torch.func`` and ``torch.compile``.
* ``"fused"`` (:mod:`gdsoftmax.loss.fused`): one chunked pass that writes the gradient during
  the forward; (N, C) float32/float64 logits, class indices, "mean" or "sum", no label smoothing.
* ``"native"`` (:mod:`gdsoftmax.loss.native`): a compiled C++ operator for the fused kernel's
  cases on CPU tensors, once ``gdsoftmax build-native`` has built it.
* ``"triton"`` (:mod:`gdsoftmax.loss.triton_beta`): a Triton kernel, one program per row, for
  (N, C) float32/float16/bfloat16 logits with class indices, every reduction, class weights and
  label smoothing; CUDA tensors (CPU tensors under ``TRITON_INTERPRET=1``).

``backend="auto"`` (the default) is deterministic given what is installed: on CUDA tensors the
Triton kernel where it covers the call; otherwise the native operator
when it is built, the call is one it covers and the logits hold at most
:data:`NATIVE_MAX_ELEMENTS` numbers (above that the fused kernel is faster); else the fused
kernel where it covers the call; else the composite. It never starts a compiler.
``GDSOFTMAX_NATIVE=0`` keeps "auto" off the native operator. A named backend runs that kernel or
raises ValueError saying why it cannot.
"""

from __future__ import annotations

import torch

from gdsoftmax.loss import composite, native, triton_beta
from gdsoftmax.loss import validation as v
from gdsoftmax.loss.fused import fused_target_loss

__all__ = ["BACKENDS", "NATIVE_MAX_ELEMENTS", "gradient_decay_loss", "supported_backends"]

BACKENDS = ("auto", "composite", "fused", "native", "triton")
NATIVE_MAX_ELEMENTS = 65536  # above this the chunked fused kernel is faster (measured up to 64 x 1000)


def gradient_decay_loss(
    input: torch.Tensor,
    target: torch.Tensor,
    beta: float = 1.0,
    *,
    tau: float = 1.0,
    weight: torch.Tensor | None = None,
    ignore_index: int = -100,
    reduction: str = "mean",
    label_smoothing: float = 0.0,
    backend: str = "auto",
) -> torch.Tensor:
    """Gradient-decay softmax loss with the arguments of ``F.cross_entropy``.

    Args:
        input: logits of shape (C,), (N, C) or (N, C, d1, ...).
        target: class indices of shape (), (N,) or (N, d1, ...) (dtype long), or class
            probabilities of the input's shape (floating point).
        beta: gradient-decay factor > 0. 1 is cross-entropy; < 1 keeps the gradient large
            until the true class is confident (large margin); > 1 decays it early
            (less confident outputs).
        tau: temperature > 0; the logits are divided by it.
        weight: optional per-class weights of shape (C,), as in ``F.cross_entropy``.
        ignore_index: class index whose samples contribute neither loss nor gradient.
        reduction: "none", "mean" (weighted mean, as PyTorch) or "sum".
        label_smoothing: in [0, 1]; the loss becomes the expectation of J under the
            smoothed target distribution.
        backend: "auto", "composite", "fused", "native" or "triton" (see the module docstring).

    Returns:
        The loss, in the input's dtype (float16/bfloat16 are computed in float32).

    Example:
        >>> import torch
        >>> logits = torch.tensor([[2.0, 0.5, -1.0]], requires_grad=True)
        >>> loss = gradient_decay_loss(logits, torch.tensor([0]), beta=0.1)
        >>> loss.backward()
        >>> round(loss.item(), 4)
        -0.9864
        >>> round(gradient_decay_loss(logits, torch.tensor([0]), 0.1, backend="composite").item(), 4)
        -0.9864
    """
    beta = v.check_positive("beta", beta)
    tau = v.check_positive("tau", tau)
    reduction = v.check_reduction(reduction)
    label_smoothing = v.check_label_smoothing(label_smoothing)
    ignore_index = v.check_ignore_index(ignore_index)
    kind = v.check_input_and_target(input, target, ignore_index)
    num_classes = input.shape[0 if kind.unbatched else 1]
    v.check_weight(weight, num_classes, input.dtype)
    kernel = _choose(backend, input, kind, reduction, label_smoothing)
    if kernel == "triton" and _compute_dtype(torch.float32, beta, tau) == torch.float64:
        if backend == "triton":
            raise ValueError(f"backend='triton' computes in float32, which beta={beta:g} or tau={tau:g} would "
                             "overflow; use backend='auto' or 'composite'")
        kernel = "composite"
    if kernel == "triton":  # half precision read as is: the kernel computes in float32 itself
        v.check_class_indices(target, num_classes, ignore_index)
        logits, index = (input.unsqueeze(0), target.reshape(1)) if kind.unbatched else (input, target)
        loss = triton_beta.triton_target_loss(logits, index.long().contiguous(), beta=beta, tau=tau, weight=weight,
                                              ignore_index=ignore_index, reduction=reduction,
                                              label_smoothing=label_smoothing)
        return loss[0] if kind.unbatched and reduction == "none" else loss

    compute_dtype = _compute_dtype(input.dtype, beta, tau)
    logits = input.to(compute_dtype)  # (N, C, d...)
    if kind.unbatched:  # (C,) -> (1, C); the target gains the same batch dimension
        logits = logits.unsqueeze(0)
        target = target.unsqueeze(0) if kind.probabilities else target.reshape(1)
    if kernel == "native":  # it checks the targets itself
        return native.load().beta_loss(logits, target.reshape(-1).long(),
                                       None if weight is None else weight.to(compute_dtype),
                                       beta, tau, ignore_index, reduction == "mean").to(input.dtype)
    class_weight = None if weight is None else composite.broadcast_over_classes(weight.to(compute_dtype), logits.dim())
    if kind.probabilities:
        per_sample, normaliser = composite.probability_target_loss(logits, target.to(compute_dtype), class_weight,
                                                                   label_smoothing, beta, tau)
        return composite.reduce(per_sample, normaliser, reduction, kind.unbatched).to(input.dtype)

    v.check_class_indices(target, num_classes, ignore_index)
    index = target.long()
    ignored = index == ignore_index  # (N, d...)
    safe_index = index.masked_fill(ignored, 0).unsqueeze(1)  # (N, 1, d...)
    if class_weight is None:
        sample_weight = (~ignored).to(compute_dtype)
    else:
        sample_weight = class_weight.expand_as(logits).gather(1, safe_index).squeeze(1).masked_fill(ignored, 0.0)
    if kernel == "fused":
        return fused_target_loss(logits, safe_index.squeeze(1), sample_weight, beta, tau, reduction).to(input.dtype)
    per_sample, normaliser = composite.class_index_loss(logits, safe_index, ignored, sample_weight, class_weight,
                                                        label_smoothing, beta, tau)
    return composite.reduce(per_sample, normaliser, reduction, kind.unbatched).to(input.dtype)


FLOAT32_SAFE = (1e-20, 1e20)  # beta and tau in this range: float32 arithmetic neither overflows nor underflows


def _compute_dtype(dtype: torch.dtype, beta: float, tau: float) -> torch.dtype:
    """Half precision is computed in float32 (as autocast does for CE); float64 stays float64. A beta
    or tau far outside float32's comfortable range (beta * e_c or z / tau would overflow or vanish)
    is computed in float64, so every kernel stays finite where the float64 value is."""
    low, high = FLOAT32_SAFE
    if not (low <= beta <= high and low <= tau <= high):
        return torch.float64
    return torch.float32 if dtype in (torch.float16, torch.bfloat16) else dtype


def supported_backends(input: torch.Tensor, target: torch.Tensor, *, reduction: str = "mean",
                       label_smoothing: float = 0.0) -> tuple[str, ...]:
    """The kernels that can compute this call in this process; "composite" always can.

    >>> z, t = torch.randn(4, 3), torch.tensor([0, 1, 2, 0])
    >>> "fused" in supported_backends(z, t), "fused" in supported_backends(z, t, reduction="none")
    (True, False)
    """
    kind = v.check_input_and_target(input, target, -100)
    return tuple(k for k in ("triton", "native", "fused", "composite")
                 if _why_not(k, input, kind, reduction, label_smoothing) is None)


def _choose(backend: str, input: torch.Tensor, kind: v.TargetKind, reduction: str, label_smoothing: float) -> str:
    """The kernel to run: the named one (or ValueError saying why it cannot), or auto's pick."""
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
    if backend != "auto":
        reason = _why_not(backend, input, kind, reduction, label_smoothing)
        if reason is not None:
            raise ValueError(f"backend={backend!r} cannot compute this call: {reason}; "
                             "use backend='auto' or 'composite'")
        return backend
    if torch.compiler.is_compiling():
        return "composite"  # the only kernel torch.compile traces; asked before anything it cannot trace
    if input.device.type == "cuda" and _why_not("triton", input, kind, reduction, label_smoothing) is None:
        return "triton"
    if (input.numel() <= NATIVE_MAX_ELEMENTS and native.enabled()
            and _why_not("native", input, kind, reduction, label_smoothing) is None):
        return "native"
    return "fused" if _why_not("fused", input, kind, reduction, label_smoothing) is None else "composite"


def _why_not(kernel: str, input: torch.Tensor, kind: v.TargetKind, reduction: str, label_smoothing: float):
    """None if ``kernel`` covers the call, else the reason (a phrase)."""
    if kernel == "composite":
        return None
    if kernel == "triton":
        return _why_not_triton(input, kind)
    if kind.probabilities or input.dim() > 2:
        return "it takes (N, C) or (C,) logits with class-index targets"
    if reduction == "none" or label_smoothing > 0.0:
        return "it reduces inside the kernel ('mean' or 'sum') and has no label smoothing"
    if input.dtype not in (torch.float32, torch.float64):
        return f"it computes in float32 or float64, not {input.dtype}"
    is_wrapped = getattr(torch._C._functorch, "is_functorch_wrapped_tensor", None)
    if torch.compiler.is_compiling() or (is_wrapped is not None and is_wrapped(input)):
        return "it is a custom autograd Function, which torch.func transforms and torch.compile do not trace"
    if kernel == "fused":
        return None
    if input.device.type != "cpu" or not input.is_contiguous():
        return "it takes contiguous CPU tensors"
    if not native.available():
        return "the C++ operator is not built here (run `gdsoftmax build-native`)"
    return None


def _why_not_triton(input: torch.Tensor, kind: v.TargetKind):
    if not triton_beta.available():
        return "the triton package is not installed"
    if kind.probabilities or input.dim() > 2:
        return "it takes (N, C) or (C,) logits with class-index targets"
    if input.dtype not in (torch.float32, torch.float16, torch.bfloat16):
        return f"it computes in float32 from float32/float16/bfloat16 logits, not {input.dtype}"
    if input.device.type != "cuda" and not triton_beta.interpreted():
        return "it runs on CUDA tensors (CPU tensors only under TRITON_INTERPRET=1)"
    is_wrapped = getattr(torch._C._functorch, "is_functorch_wrapped_tensor", None)
    if torch.compiler.is_compiling() or (is_wrapped is not None and is_wrapped(input)):
        return "it is a custom autograd Function, which torch.func transforms and torch.compile do not trace"
    return None
