"""The gradient-decay softmax loss, functional form.

For logits z, target class c, temperature tau and gradient-decay factor beta::

    J = -log( e^{z_c/tau} / (sum_{i != c} e^{z_i/tau} + beta * e^{z_c/tau}) )

beta = 1 is cross-entropy. All computation runs on the max-shifted logits
s' = (z - max z) / tau, where every exponent is <= 0, so nothing overflows and no
large number is ever subtracted from another large number; this is what keeps
float32 values and gradients as accurate as ``F.cross_entropy``'s at |z| = 1e4.
"""

from __future__ import annotations

import torch

from gdsoftmax import _validation as v
from gdsoftmax import native as _native

__all__ = ["gradient_decay_loss"]


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
) -> torch.Tensor:
    """Gradient-decay softmax loss with the arguments of ``F.cross_entropy``.

    Args:
        input: logits of shape (C,), (N, C) or (N, C, d1, ...).
        target: class indices of shape (), (N,) or (N, d1, ...) (dtype long), or class
            probabilities of the input's shape (floating point).
        beta: gradient-decay factor > 0. 1 is cross-entropy; < 1 keeps the gradient large
            until the true class is confident (large margin); > 1 decays it early
            (better calibration).
        tau: temperature > 0; the logits are divided by it.
        weight: optional per-class weights of shape (C,), as in ``F.cross_entropy``.
        ignore_index: class index whose samples contribute neither loss nor gradient.
        reduction: "none", "mean" (weighted mean, as PyTorch) or "sum".
        label_smoothing: in [0, 1]; the loss becomes the expectation of J under the
            smoothed target distribution.

    Returns:
        The loss, in the input's dtype (float16/bfloat16 are computed in float32).

    Example:
        >>> import torch
        >>> logits = torch.tensor([[2.0, 0.5, -1.0]], requires_grad=True)
        >>> loss = gradient_decay_loss(logits, torch.tensor([0]), beta=0.1)
        >>> loss.backward()
        >>> round(loss.item(), 4)
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

    # Half precision is computed in float32 (as autocast does for CE); float64 stays float64.
    compute_dtype = torch.float32 if input.dtype in (torch.float16, torch.bfloat16) else input.dtype
    logits = input.to(compute_dtype)  # (N, C, d...)
    if kind.unbatched:  # (C,) -> (1, C); the target gains the same batch dimension
        logits = logits.unsqueeze(0)
        target = target.unsqueeze(0) if kind.probabilities else target.reshape(1)
    class_weight = None if weight is None else _broadcast_over_classes(weight.to(compute_dtype), logits.dim())

    if kind.probabilities:
        q = target.to(compute_dtype)  # (N, C, d...)
        if label_smoothing > 0.0:
            q = q * (1.0 - label_smoothing) + label_smoothing / num_classes
        weighted_q = q if class_weight is None else q * class_weight
        per_sample = _ExpectedLoss.apply(logits, weighted_q, beta, tau)  # (N, d...)
        normaliser = torch.tensor(float(per_sample.numel()), dtype=compute_dtype, device=logits.device)
    else:
        if _native_applies(logits, input, label_smoothing, reduction):
            # small CPU batches: one compiled operator (gdsoftmax.native), which checks the targets
            return _native.load().beta_loss(logits, target.reshape(-1).long(),
                                            None if weight is None else weight.to(compute_dtype),
                                            beta, tau, ignore_index, reduction == "mean")
        v.check_class_indices(target, num_classes, ignore_index)
        index = target.long()
        ignored = index == ignore_index  # (N, d...)
        safe_index = index.masked_fill(ignored, 0).unsqueeze(1)  # (N, 1, d...)
        if class_weight is None:
            sample_weight = (~ignored).to(compute_dtype)
        else:
            sample_weight = class_weight.expand_as(logits).gather(1, safe_index).squeeze(1)
            sample_weight = sample_weight.masked_fill(ignored, 0.0)
        if _fused_applies(logits, input, label_smoothing, reduction):
            # one chunked pass that also writes the gradient (gdsoftmax.fused); same formulas
            from gdsoftmax.fused import fused_target_loss

            return fused_target_loss(logits, safe_index.squeeze(1), sample_weight, beta, tau, reduction)
        if label_smoothing > 0.0:
            # (1 - eps) * one-hot + eps / C, weighted per class: PyTorch's label-smoothed CE
            # is exactly the expectation of -log p under this distribution.
            q = torch.full_like(logits, label_smoothing / num_classes)
            q = q.scatter_add(1, safe_index, torch.full_like(safe_index, 1.0 - label_smoothing, dtype=compute_dtype))
            q = q if class_weight is None else q * class_weight
            q = q.masked_fill(ignored.unsqueeze(1), 0.0)
            per_sample = _ExpectedLoss.apply(logits, q, beta, tau)
        else:
            per_sample = sample_weight * target_class_loss(logits, safe_index, beta, tau)
        # torch.where (not multiplication) so ignored samples give exactly 0 and no gradient,
        # even where their logits are inf.
        per_sample = torch.where(ignored, torch.zeros((), dtype=compute_dtype, device=logits.device), per_sample)
        normaliser = sample_weight.sum()

    if reduction == "none":
        loss = per_sample.squeeze(0) if kind.unbatched else per_sample
    elif reduction == "sum":
        loss = per_sample.sum()
    else:
        loss = _safe_mean(per_sample.sum(), normaliser)
    return loss.to(input.dtype)


def _fused_applies(logits: torch.Tensor, input: torch.Tensor, label_smoothing: float, reduction: str) -> bool:
    """The fused kernel covers (N, C) float32/64 class-index losses reduced to a scalar, outside
    torch.func transforms and compilation (it is a custom Function without vmap or jvp rules)."""
    if logits.dim() != 2 or label_smoothing > 0.0 or reduction == "none" or logits.dtype != input.dtype:
        return False
    if logits.dtype not in (torch.float32, torch.float64) or torch.compiler.is_compiling():
        return False
    is_wrapped = getattr(torch._C._functorch, "is_functorch_wrapped_tensor", None)
    return not (is_wrapped is not None and is_wrapped(input))


NATIVE_MAX_ELEMENTS = 65536  # above this the chunked fused kernel is faster (measured up to 64 x 1000)


def _native_applies(logits: torch.Tensor, input: torch.Tensor, label_smoothing: float, reduction: str) -> bool:
    """The compiled operator covers what the fused kernel covers, on the CPU, for small batches."""
    return (logits.device.type == "cpu" and logits.numel() <= NATIVE_MAX_ELEMENTS and logits.is_contiguous()
            and _fused_applies(logits, input, label_smoothing, reduction) and _native.available())


def target_class_loss(logits: torch.Tensor, index: torch.Tensor, beta: float, tau: float) -> torch.Tensor:
    """J(z, c) for one class per sample; logits (N, C, d...), index (N, 1, d...) -> (N, d...).

    Plain differentiable torch ops, so autograd gives gradients of every order. The
    gradient on the true logit comes out as beta*e_c/D - 1, whose absolute error is the
    same as cross-entropy's p_c - 1.

    >>> z = torch.tensor([[3.0, 1.0, 0.0]])
    >>> round(target_class_loss(z, torch.tensor([[0]]), 1.0, 1.0).item(), 4)
    0.1698
    """
    # J is invariant to a shift of all logits, so the shift needs no gradient.
    shifted = (logits - logits.amax(1, keepdim=True).detach()) / tau  # (N, C, d...), all <= 0
    exp_shifted = shifted.exp()
    exp_target = exp_shifted.gather(1, index)  # (N, 1, d...)
    # Summing the other classes directly (not total - target) avoids cancellation when p_c -> 1.
    sum_others = exp_shifted.scatter(1, index, 0.0).sum(1, keepdim=True)
    loss = torch.log(sum_others + beta * exp_target) - shifted.gather(1, index)
    return loss.squeeze(1)


def _broadcast_over_classes(weight: torch.Tensor, ndim: int) -> torch.Tensor:
    """(C,) -> (1, C, 1, ..., 1) for an input with ``ndim`` dimensions."""
    return weight.reshape(1, -1, *([1] * (ndim - 2)))


def _safe_mean(total: torch.Tensor, normaliser: torch.Tensor) -> torch.Tensor:
    """total / normaliser, but NaN with a zero gradient when nothing was counted (as CE does)."""
    empty = normaliser == 0
    mean = total / torch.where(empty, torch.ones_like(normaliser), normaliser)
    return torch.where(empty, torch.full_like(mean, float("nan")), mean)


def _sum_excluding_self(values: torch.Tensor) -> torch.Tensor:
    """out_i = sum_{k != i} values_k along dim 1, without cancellation for values >= 0.

    ``total - values_i`` loses all precision when values_i dominates the total. Instead,
    the largest entry is left out of the running sum and added back only where it belongs.
    """
    top = values.argmax(1, keepdim=True)  # (N, 1, d...)
    is_top = torch.zeros_like(values, dtype=torch.bool).scatter_(1, top, True)
    rest = values.masked_fill(is_top, 0.0)
    top_value = values.gather(1, top)
    return rest.sum(1, keepdim=True) - rest + top_value * (~is_top)


def _all_class_terms(logits: torch.Tensor, beta: float, tau: float):
    """Pieces of J(z, k) for every class k; each (N, C, d...).

    Returns the shifted logits s', exp(s'), S_other_k = sum_{i != k} exp(s'_i) and
    D_k = S_other_k + beta * exp(s'_k), so that J(z, k) = log D_k - s'_k.
    """
    shifted = (logits - logits.amax(1, keepdim=True).detach()) / tau
    exp_shifted = shifted.exp()
    return shifted, exp_shifted, (sum_others := _sum_excluding_self(exp_shifted)), sum_others + beta * exp_shifted


class _ExpectedLoss(torch.autograd.Function):
    """sum_k q_k * J(z, k) per sample: probability targets and label smoothing.

    Autograd through the composite would form the gradient as a difference of terms of
    size 1/beta, losing everything at small beta. The backward below uses the exact form
    dL/ds'_i = e_i * sum_{k != i} q_k / D_k - q_i * S_other_i / D_i, whose terms never
    cancel for q >= 0. It is written in differentiable ops, so double backward works.
    """

    @staticmethod
    def forward(ctx, logits, weighted_q, beta, tau):
        shifted, _, _, denominator = _all_class_terms(logits, beta, tau)
        ctx.save_for_backward(logits, weighted_q)
        ctx.beta, ctx.tau = beta, tau
        return (weighted_q * (denominator.log() - shifted)).sum(1)

    @staticmethod
    def backward(ctx, grad_out):
        logits, weighted_q = ctx.saved_tensors
        shifted, exp_shifted, sum_others, denominator = _all_class_terms(logits, ctx.beta, ctx.tau)
        grad_out = grad_out.unsqueeze(1)  # (N, 1, d...)
        grad_logits = grad_q = None
        if ctx.needs_input_grad[0]:
            ratio = weighted_q / denominator
            grad_shifted = exp_shifted * _sum_excluding_self(ratio) - ratio * sum_others
            grad_logits = grad_out * grad_shifted / ctx.tau
        if ctx.needs_input_grad[1]:
            grad_q = grad_out * (denominator.log() - shifted)
        return grad_logits, grad_q, None, None
