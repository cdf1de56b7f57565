"""The composite β-loss: plain differentiable PyTorch ops, correct for every input.

This is the reference implementation behind ``gradient_decay_loss(..., backend="composite")``:
it covers class indices and probabilities, every shape, reduction and label smoothing, works
under ``torch.func`` transforms and ``torch.compile``, and gives gradients of every order. The
fused and native kernels compute the same formulas faster for the cases they cover.

Everything runs on the max-shifted logits s' = (z - max z) / tau (every exponent <= 0), so
nothing overflows and no large number is subtracted from another.
"""

from __future__ import annotations

import torch

__all__ = ["broadcast_over_classes", "class_index_loss", "probability_target_loss", "reduce", "target_class_loss"]


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


def probability_target_loss(logits: torch.Tensor, q: torch.Tensor, class_weight: torch.Tensor | None,
                            label_smoothing: float, beta: float, tau: float):
    """Per-sample expected loss under target distributions q (N, C, d...), and the mean's normaliser."""
    num_classes = logits.shape[1]
    if label_smoothing > 0.0:
        q = q * (1.0 - label_smoothing) + label_smoothing / num_classes
    weighted_q = q if class_weight is None else q * class_weight
    per_sample = _ExpectedLoss.apply(logits, weighted_q, beta, tau)  # (N, d...)
    return per_sample, torch.tensor(float(per_sample.numel()), dtype=logits.dtype, device=logits.device)


def class_index_loss(logits: torch.Tensor, safe_index: torch.Tensor, ignored: torch.Tensor,
                     sample_weight: torch.Tensor, class_weight: torch.Tensor | None, label_smoothing: float,
                     beta: float, tau: float):
    """Per-sample loss for class indices (N, 1, d...) (ignored samples read class 0), and the normaliser."""
    if label_smoothing > 0.0:
        # (1 - eps) * one-hot + eps / C, weighted per class: PyTorch's label-smoothed CE
        # is exactly the expectation of -log p under this distribution.
        num_classes = logits.shape[1]
        q = torch.full_like(logits, label_smoothing / num_classes)
        q = q.scatter_add(1, safe_index, torch.full_like(safe_index, 1.0 - label_smoothing, dtype=logits.dtype))
        q = q if class_weight is None else q * class_weight
        q = q.masked_fill(ignored.unsqueeze(1), 0.0)
        per_sample = _ExpectedLoss.apply(logits, q, beta, tau)
    else:
        per_sample = sample_weight * target_class_loss(logits, safe_index, beta, tau)
    # torch.where (not multiplication) so ignored samples give exactly 0 and no gradient,
    # even where their logits are inf.
    per_sample = torch.where(ignored, torch.zeros((), dtype=logits.dtype, device=logits.device), per_sample)
    return per_sample, sample_weight.sum()


def reduce(per_sample: torch.Tensor, normaliser: torch.Tensor, reduction: str, unbatched: bool) -> torch.Tensor:
    """Apply ``reduction`` as F.cross_entropy does ("mean" is the weighted mean)."""
    if reduction == "none":
        return per_sample.squeeze(0) if unbatched else per_sample
    if reduction == "sum":
        return per_sample.sum()
    return _safe_mean(per_sample.sum(), normaliser)


def broadcast_over_classes(weight: torch.Tensor, ndim: int) -> torch.Tensor:
    """(C,) -> (1, C, 1, ..., 1) for an input with ``ndim`` dimensions."""
    return weight.reshape(1, -1, *([1] * (ndim - 2)))
