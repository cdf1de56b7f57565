"""A fused beta-loss for class-index targets: the gradient is written during the forward pass.

One pass over row chunks computes, per row, J = log(S_other + beta e_c) - s'_c on the shifted
logits s' = (z - max z) / tau and, when the input needs a gradient, writes
dJ/dz = w / tau * (e_i / D for i != c, -S_other / D for c) into a buffer of the logits' size:
no softmax copy is kept. The reduction's scale (1 / sum of weights for "mean") is folded into
the buffer, so the usual ``loss.backward()`` hands the buffer over without another pass.
``inplace=True`` writes the gradient into the logits themselves (as Liger-Kernel and
flash-attention's cross-entropy do): the input is overwritten and double backward is refused.

``gradient_decay_loss(..., backend="fused")`` runs this kernel for (N, C) float32/float64 logits with
class-index targets, "mean" or "sum" and no label smoothing, outside torch.func transforms (the
custom Function has no vmap rule); ``backend="auto"`` picks it there unless the native operator
serves the call.

>>> import torch
>>> z = torch.randn(6, 5, requires_grad=True)
>>> t = torch.tensor([0, 1, 2, 3, 4, 0])
>>> from gdsoftmax import gradient_decay_loss
>>> torch.allclose(fused_gradient_decay_loss(z, t, 0.1), gradient_decay_loss(z, t, 0.1))
True
"""

from __future__ import annotations

import torch

from gdsoftmax.loss import validation as v
from gdsoftmax.loss.composite import target_class_loss

__all__ = ["fused_gradient_decay_loss", "fused_linear_gradient_decay_loss", "fused_target_loss",
           "stacked_beta_loss"]

CHUNK_BYTES = 8 << 20  # rows per chunk so that a chunk of float32 logits is about 8 MB


def _chunk_loss(z, out, idx, w, beta, tau: float, grad_scale: float | None) -> torch.Tensor:
    """w * J for each row of z (r, C), as (r, 1); with ``grad_scale`` it also writes
    grad_scale * d(w J)/dz into ``out`` (which may be z itself). ``w`` and ``beta`` are numbers
    or per-row columns (r, 1)."""
    z_max = z.amax(1, keepdim=True)  # (r, 1)
    shifted_target = (z.gather(1, idx) - z_max) / tau  # read before an in-place overwrite
    torch.sub(z, z_max, out=out).div_(tau).exp_()  # e = exp(s'), all <= 1
    e_target = out.gather(1, idx)
    out.scatter_(1, idx, 0.0)
    s_other = out.sum(1, keepdim=True)  # summed without the target: exact as p_c -> 1
    denominator = s_other + beta * e_target
    row_loss = w * (denominator.log() - shifted_target)  # (r, 1)
    if grad_scale is not None:
        out.div_(denominator).scatter_(1, idx, -s_other / denominator).mul_(w * (grad_scale / tau))
    return row_loss


class _FusedTargetLoss(torch.autograd.Function):
    @staticmethod
    def forward(ctx, logits, index, row_weight, beta, tau, scale, inplace):
        n, c = logits.shape
        needs_grad = ctx.needs_input_grad[0]
        grad = (logits if inplace else torch.empty_like(logits)) if needs_grad else None
        total = torch.zeros((), dtype=logits.dtype, device=logits.device)
        rows = max(1, CHUNK_BYTES // max(1, c * logits.element_size()))
        scratch = None if needs_grad else torch.empty(min(rows, n), c, dtype=logits.dtype, device=logits.device)
        for start in range(0, n, rows):
            stop = min(n, start + rows)
            out = grad[start:stop] if needs_grad else scratch[: stop - start]
            total += _chunk_loss(logits[start:stop], out, index[start:stop, None], row_weight[start:stop, None],
                                 beta, tau, scale if needs_grad else None).sum()
        ctx.save_for_backward(grad, None if inplace else logits, index, row_weight)
        ctx.beta, ctx.tau, ctx.scale, ctx.inplace = beta, tau, scale, inplace
        return total * scale

    @staticmethod
    def backward(ctx, grad_output):
        grad, logits, index, row_weight = ctx.saved_tensors
        if torch.is_grad_enabled():  # create_graph: recompute through the differentiable composite
            if ctx.inplace:
                raise RuntimeError("inplace=True overwrote the logits, so double backward is not possible")
            # differentiate with respect to the saved input itself, so the result stays on its graph
            loss = (row_weight * target_class_loss(logits, index[:, None], ctx.beta, ctx.tau)).sum() * ctx.scale
            (g,) = torch.autograd.grad(loss, logits, create_graph=True)
            return g * grad_output, None, None, None, None, None, None
        if grad_output.device.type == "cpu" and grad_output.numel() == 1 and float(grad_output) == 1.0:
            return grad, None, None, None, None, None, None  # the usual loss.backward(): no extra pass
        return grad * grad_output, None, None, None, None, None, None


def fused_target_loss(logits, index, row_weight, beta: float, tau: float, reduction: str, inplace: bool = False):
    """The kernel entry, arguments already checked: logits (N, C) float32/64, index (N,) in range
    (ignored rows read class 0), row_weight (N,) with 0 for ignored rows; reduction "mean" or "sum"."""
    logits = logits if logits.is_contiguous() else logits.contiguous()
    if reduction == "sum":
        return _FusedTargetLoss.apply(logits, index, row_weight, beta, tau, 1.0, inplace)
    if logits.device.type != "cpu":  # no host synchronisation: the mean's scale stays on the device
        return _mean_on_device(logits, index, row_weight, beta, tau, inplace)
    total = float(row_weight.sum())
    if total == 0:  # as F.cross_entropy: NaN, with a zero gradient
        return (logits * 0).sum() + float("nan")
    return _FusedTargetLoss.apply(logits, index, row_weight, beta, tau, 1.0 / total, inplace)


def _mean_on_device(logits, index, row_weight, beta: float, tau: float, inplace: bool):
    """The mean reduction with its scale 1 / sum(weights) kept a device tensor (NaN when every
    weight is 0, with a zero gradient, as F.cross_entropy)."""
    total = row_weight.sum()
    empty = total == 0
    scale = torch.where(empty, torch.zeros_like(total), 1.0 / total)
    loss = _FusedTargetLoss.apply(logits, index, row_weight, beta, tau, scale, inplace)
    return torch.where(empty, torch.full_like(loss, float("nan")), loss)


def fused_gradient_decay_loss(input, target, beta: float = 1.0, *, tau: float = 1.0, weight=None,
                              ignore_index: int = -100, reduction: str = "mean", inplace: bool = False):
    """The beta-loss of (N, C) logits and (N,) class indices, reduced to a scalar ("mean" or "sum").

    :func:`gdsoftmax.gradient_decay_loss` already uses this kernel where it applies; call this
    directly for ``inplace=True``.
    """
    beta, tau = v.check_positive("beta", beta), v.check_positive("tau", tau)
    if v.check_reduction(reduction) == "none":
        raise ValueError("the fused loss reduces inside its kernel; use reduction='mean' or 'sum'")
    kind = v.check_input_and_target(input, target, v.check_ignore_index(ignore_index))
    if kind.probabilities or kind.unbatched or input.dim() != 2:
        raise ValueError("the fused loss takes (N, C) logits and (N,) class indices")
    if input.dtype not in (torch.float32, torch.float64):
        raise ValueError(f"the fused loss computes in the input's dtype; got {input.dtype}, use float32 or float64")
    v.check_weight(weight, input.shape[1], input.dtype)
    v.check_class_indices(target, input.shape[1], ignore_index)
    index = target.long()
    ignored = index == ignore_index
    safe = index.masked_fill(ignored, 0)
    row_weight = (~ignored).to(input.dtype) if weight is None else weight[safe].masked_fill(ignored, 0.0)
    return fused_target_loss(input, safe, row_weight, beta, tau, reduction, inplace)


class _FusedLinearLoss(torch.autograd.Function):
    """Loss of ``hidden @ weight.T + bias`` computed in row chunks; gradients of hidden, weight and
    bias are accumulated in the same pass, so the (N, V) logits never exist at once."""

    @staticmethod
    def forward(ctx, hidden, weight, bias, index, row_weight, beta, tau, scale, chunk_rows):
        needs_hidden, needs_weight, needs_bias = ctx.needs_input_grad[:3]
        needs_grad = needs_hidden or needs_weight or needs_bias
        grad_hidden = torch.empty_like(hidden) if needs_hidden else None
        grad_weight = torch.zeros_like(weight) if needs_weight else None
        grad_bias = torch.zeros_like(bias) if needs_bias else None
        total = torch.zeros((), dtype=hidden.dtype, device=hidden.device)
        for start in range(0, hidden.shape[0], chunk_rows):
            stop = min(hidden.shape[0], start + chunk_rows)
            h = hidden[start:stop]  # (r, H)
            logits = h @ weight.T if bias is None else torch.addmm(bias, h, weight.T)  # (r, V)
            total += _chunk_loss(logits, logits, index[start:stop, None], row_weight[start:stop, None], beta, tau,
                                 scale if needs_grad else None).sum()
            if needs_hidden:
                torch.mm(logits, weight, out=grad_hidden[start:stop])  # logits now hold d loss / d logits
            if needs_weight:
                grad_weight.addmm_(logits.T, h)
            if needs_bias:
                grad_bias += logits.sum(0)
        ctx.save_for_backward(grad_hidden, grad_weight, grad_bias)
        return total * scale

    @staticmethod
    def backward(ctx, grad_output):
        if torch.is_grad_enabled():
            raise RuntimeError("the fused linear loss has no double backward; use matmul + gradient_decay_loss")
        grads = ctx.saved_tensors
        if not (grad_output.numel() == 1 and float(grad_output) == 1.0):
            grads = tuple(None if g is None else g * grad_output for g in grads)
        return (*grads, None, None, None, None, None, None)


def fused_linear_gradient_decay_loss(hidden, weight, target, beta: float = 1.0, *, bias=None, tau: float = 1.0,
                                     ignore_index: int = -100, reduction: str = "mean", chunk_rows: int | None = None):
    """The beta-loss of ``hidden @ weight.T + bias`` for large vocabularies, without the full logits.

    hidden (N, H), weight (V, H), bias (V,) or None, target (N,) class indices. The rows are
    processed ``chunk_rows`` at a time (default: about 64 MB of logits per chunk), and the
    gradients for hidden, weight and bias are accumulated during the forward pass.

    >>> h, w = torch.randn(8, 4, requires_grad=True), torch.randn(6, 4, requires_grad=True)
    >>> t = torch.randint(6, (8,))
    >>> from gdsoftmax import gradient_decay_loss
    >>> torch.allclose(fused_linear_gradient_decay_loss(h, w, t, 0.1), gradient_decay_loss(h @ w.T, t, 0.1))
    True
    """
    beta, tau = v.check_positive("beta", beta), v.check_positive("tau", tau)
    if v.check_reduction(reduction) == "none":
        raise ValueError("the fused linear loss reduces inside its kernel; use reduction='mean' or 'sum'")
    ignore_index = v.check_ignore_index(ignore_index)
    if hidden.dim() != 2 or weight.dim() != 2 or hidden.shape[1] != weight.shape[1]:
        raise ValueError(f"need hidden (N, H) and weight (V, H), got {tuple(hidden.shape)} and {tuple(weight.shape)}")
    if bias is not None and bias.shape != weight.shape[:1]:
        raise ValueError(f"bias must have shape ({weight.shape[0]},), got {tuple(bias.shape)}")
    if target.shape != hidden.shape[:1]:
        raise ValueError(f"target must have shape ({hidden.shape[0]},), got {tuple(target.shape)}")
    v.check_class_indices(target, weight.shape[0], ignore_index)
    index = target.long()
    ignored = index == ignore_index
    row_weight = (~ignored).to(hidden.dtype)
    scale = 1.0
    if reduction == "mean":
        total = float(row_weight.sum())
        if total == 0:
            return (hidden * 0).sum() + (weight * 0).sum() + float("nan")
        scale = 1.0 / total
    rows = chunk_rows or max(1, (64 << 20) // (weight.shape[0] * hidden.element_size()))
    return _FusedLinearLoss.apply(hidden.contiguous(), weight.contiguous(), bias, index.masked_fill(ignored, 0),
                                  row_weight, beta, tau, scale, rows)


class _StackedBetaLoss(torch.autograd.Function):
    """Per-run mean beta-losses of stacked logits; the gradient is written in the forward pass."""

    @staticmethod
    def forward(ctx, logits, target, beta, tau):
        m, b, k = logits.shape
        flat = logits.reshape(m * b, k)  # (M*B, K)
        grad = torch.empty_like(flat)
        beta_rows = beta.to(logits.dtype).repeat_interleave(b).unsqueeze(1)  # (M*B, 1)
        rows = _chunk_loss(flat, grad, target.reshape(m * b, 1), 1.0 / b, beta_rows, tau, 1.0)
        ctx.save_for_backward(grad)
        return rows.view(m, b).sum(1)  # (M,)

    @staticmethod
    def backward(ctx, grad_output):
        if torch.is_grad_enabled():
            raise RuntimeError("stacked_beta_loss has no double backward")
        (grad,) = ctx.saved_tensors
        m = grad_output.shape[0]
        return grad.view(m, -1, grad.shape[1]) * grad_output.view(m, 1, 1), None, None, None


def stacked_beta_loss(logits: torch.Tensor, target: torch.Tensor, beta: torch.Tensor, tau: float = 1.0):
    """Mean beta-loss of each of M runs: logits (M, B, K), target (M, B), beta (M,) -> (M,).

    The kernel of stacked training (M models trained as one): one chunked pass with a beta per
    run, the gradient written during the forward pass.

    >>> from gdsoftmax.loss import gradient_decay_loss
    >>> z, t = torch.randn(2, 5, 3), torch.randint(3, (2, 5))
    >>> losses = stacked_beta_loss(z, t, torch.tensor([0.1, 4.0]))
    >>> torch.allclose(losses[1], gradient_decay_loss(z[1], t[1], 4.0))
    True
    """
    if logits.dim() != 3 or target.shape != logits.shape[:2] or beta.shape != logits.shape[:1]:
        raise ValueError(f"need logits (M, B, K), target (M, B) and beta (M,); got {tuple(logits.shape)}, "
                         f"{tuple(target.shape)} and {tuple(beta.shape)}")
    return _StackedBetaLoss.apply(logits.contiguous(), target.long(), beta, float(tau))
