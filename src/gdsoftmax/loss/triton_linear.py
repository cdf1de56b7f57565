"""The fused linear β-loss on the Triton row kernel: ``hidden @ weight.T + bias`` in row chunks,
the (N, V) logits never materialised whole.

Per chunk of rows: the logits are computed in float32 (with bf16/fp16 inputs the GEMM's output is
float32 itself on CUDA, not a bf16 result cast afterwards, which would leave the gradients a few
percent off); the kernel of :mod:`gdsoftmax.loss.triton_beta` overwrites them with their
gradient; that gradient gives the chunk's share of d hidden, d weight and d bias.

* "mean" and "sum": the gradients are accumulated during the forward pass (one GEMM pass), and
  backward only scales them by the incoming gradient.
* "none": a gradient written in the forward cannot be rescaled per row afterwards, so the
  forward computes only the losses and backward recomputes each chunk with its rows' upstream
  gradients (the deferred form, one extra GEMM).

Class weights, per-row (token) weights, ignore_index, label smoothing and tau are the row
kernel's. Runs on CUDA tensors, and on CPU tensors under ``TRITON_INTERPRET=1``.
"""

from __future__ import annotations

import torch

from gdsoftmax.loss import triton_beta
from gdsoftmax.loss import validation as v

__all__ = ["triton_fused_linear_loss"]


def _logits32(hidden: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
    """hidden @ weight.T (+ bias) as float32 (r, V), accumulated in float32 whatever the inputs' dtype."""
    if hidden.dtype == torch.float32 or hidden.device.type != "cuda":
        logits = hidden.float() @ weight.float().T
    else:  # a bf16/fp16 GEMM whose output is float32 (no rounding of the logits to half precision)
        logits = torch.mm(hidden, weight.T, out_dtype=torch.float32)
    return logits if bias is None else logits.add_(bias.float())


class _TritonLinearLoss(torch.autograd.Function):
    @staticmethod
    def forward(ctx, hidden, weight, bias, target, class_weight, row_weight, beta, tau, ignore_index, reduction,
                label_smoothing, chunk_rows):
        options = (beta, tau, ignore_index, label_smoothing)
        total = triton_beta.total_weight(target, class_weight, row_weight, ignore_index)
        scale = triton_beta.mean_scale(total, reduction)
        grads = _Grads(hidden, weight, bias, ctx.needs_input_grad[:3]) if reduction != "none" else None
        losses = torch.empty(hidden.shape[0], dtype=torch.float32, device=hidden.device)
        for rows in _chunks(hidden.shape[0], chunk_rows):
            logits = _logits32(hidden[rows], weight, bias)  # (r, V) float32, overwritten by its gradient
            losses[rows] = triton_beta.rows_loss_and_grad(logits, logits, target[rows], class_weight,
                                                          None if row_weight is None else row_weight[rows], scale,
                                                          *options)
            if grads is not None:
                grads.add(rows, logits, hidden, weight)
        ctx.reduction, ctx.options, ctx.chunk_rows = reduction, options, chunk_rows
        if reduction == "none":
            ctx.save_for_backward(hidden, weight, bias, target, class_weight, row_weight)
            return losses
        ctx.save_for_backward(*grads.result())
        return losses.sum() / total if reduction == "mean" else losses.sum()

    @staticmethod
    def backward(ctx, grad_output):
        if ctx.reduction != "none":
            grads = tuple(None if g is None else g * grad_output.to(g.dtype) for g in ctx.saved_tensors)
            return (*grads, *(None,) * 9)
        hidden, weight, bias, target, class_weight, row_weight = ctx.saved_tensors
        beta, tau, ignore_index, label_smoothing = ctx.options
        grads = _Grads(hidden, weight, bias, ctx.needs_input_grad[:3])
        one = torch.ones(1, device=hidden.device)
        for rows in _chunks(hidden.shape[0], ctx.chunk_rows):  # the deferred, per-row scaled gradient
            logits = _logits32(hidden[rows], weight, bias)
            triton_beta.rows_loss_and_grad(logits, logits, target[rows], class_weight,
                                           None if row_weight is None else row_weight[rows], one, beta, tau,
                                           ignore_index, label_smoothing)
            grads.add(rows, logits.mul_(grad_output[rows, None].float()), hidden, weight)
        return (*grads.result(), *(None,) * 9)


class _Grads:
    """d hidden, d weight and d bias accumulated chunk by chunk, in float32, from d loss / d logits."""

    def __init__(self, hidden, weight, bias, needs):
        self.hidden = torch.empty_like(hidden) if needs[0] else None
        self.weight = torch.zeros(weight.shape, dtype=torch.float32, device=weight.device) if needs[1] else None
        self.bias = torch.zeros(bias.shape, dtype=torch.float32, device=bias.device) if needs[2] else None
        self.dtypes = (weight.dtype, None if bias is None else bias.dtype)

    def add(self, rows: slice, grad_logits: torch.Tensor, hidden, weight) -> None:
        if self.hidden is not None:
            self.hidden[rows] = (grad_logits @ weight.float()).to(self.hidden.dtype)
        if self.weight is not None:
            self.weight.addmm_(grad_logits.T, hidden[rows].float())
        if self.bias is not None:
            self.bias += grad_logits.sum(0)

    def result(self):
        return (self.hidden, None if self.weight is None else self.weight.to(self.dtypes[0]),
                None if self.bias is None else self.bias.to(self.dtypes[1]))


def _chunks(n: int, chunk_rows: int):
    for start in range(0, n, chunk_rows):
        yield slice(start, min(n, start + chunk_rows))


def triton_fused_linear_loss(hidden: torch.Tensor, weight: torch.Tensor, target: torch.Tensor, beta: float = 1.0,
                             *, bias: torch.Tensor | None = None, tau: float = 1.0,
                             class_weight: torch.Tensor | None = None, row_weight: torch.Tensor | None = None,
                             ignore_index: int = -100, reduction: str = "mean", label_smoothing: float = 0.0,
                             chunk_rows: int | None = None) -> torch.Tensor:
    """The β-loss of ``hidden @ weight.T + bias`` (hidden (N, H), weight (V, H), target (N,)) by
    chunks, on the Triton kernel; ``row_weight`` (N,) weighs each row (token) on top of
    ``class_weight`` (V,). Returns a float32 loss ((N,) for ``reduction="none"``). No double backward.
    """
    beta, tau = v.check_positive("beta", beta), v.check_positive("tau", tau)
    reduction, ignore_index = v.check_reduction(reduction), v.check_ignore_index(ignore_index)
    label_smoothing = v.check_label_smoothing(label_smoothing)
    if hidden.dim() != 2 or weight.dim() != 2 or hidden.shape[1] != weight.shape[1]:
        raise ValueError(f"need hidden (N, H) and weight (V, H), got {tuple(hidden.shape)} and {tuple(weight.shape)}")
    if target.shape != hidden.shape[:1]:
        raise ValueError(f"target must have shape ({hidden.shape[0]},), got {tuple(target.shape)}")
    if row_weight is not None and row_weight.shape != hidden.shape[:1]:
        raise ValueError(f"row_weight must have shape ({hidden.shape[0]},), got {tuple(row_weight.shape)}")
    v.check_class_indices(target, weight.shape[0], ignore_index)
    rows = chunk_rows or max(1, (256 << 20) // (4 * weight.shape[0]))  # about 256 MB of float32 logits per chunk
    return _TritonLinearLoss.apply(hidden.contiguous(), weight.contiguous(), bias, target.long().contiguous(),
                                   class_weight, row_weight, beta, tau, ignore_index, reduction, label_smoothing,
                                   rows)
