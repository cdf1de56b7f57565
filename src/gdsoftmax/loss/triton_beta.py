"""The β-loss as a Triton kernel: one program per row computes the loss and writes its gradient.

For a row of logits z (C,), target c, temperature tau and gradient-decay factor beta, with
m = max_j z_j / tau and rest = sum_{j != c} e^{z_j / tau - m} (the target left out of the sum, so
that nothing cancels when p_c is near 1)::

    J = log(rest + beta e^{z_c / tau - m}) + m - z_c / tau
    dJ/dz_j = e^{z_j / tau - m} / (tau D)           (j != c),   D = rest + beta e^{z_c / tau - m}
    dJ/dz_c = (beta e^{z_c / tau - m} / D - 1) / tau

A first pass over the row's blocks keeps a running maximum and sum (the online softmax); a
second writes the gradient, scaled by the sample's class weight (and 1 / total weight for
"mean"), into a buffer, or into the logits themselves (``inplace``). Backward multiplies that
buffer by the incoming gradient, per row, so ``reduction="none"`` works as well as "mean" and
"sum" (the per-row scale is deferred, not baked in). Ignored rows get loss and gradient 0.

With label smoothing eps the loss is sum_k a_k J_k, a_k = w_k (eps / C + (1 - eps) [k = c]) (the
expectation of J under the smoothed target, class-weighted as F.cross_entropy does), and
dJ/dz_i = (e_i sum_{k != i} a_k / D_k - a_i S_{not i} / D_i) / tau with D_k = S_{not k} + beta e_k:
a third pass, and S_{not k} kept exact for the target and for the argmax (the two classes whose
sum-without-them would cancel).

Runs on CUDA tensors with Triton, and on CPU tensors under ``TRITON_INTERPRET=1`` (how the
tests run it). Logits in float32, float16 or bfloat16 are read, computed in float32, and the
gradient is written in the logits' dtype.
"""

from __future__ import annotations

import functools
import importlib.util
import os

import torch

__all__ = ["available", "interpreted", "triton_target_loss"]


def available() -> bool:
    """Whether triton is installed (it comes with PyTorch on Linux); nothing is imported until a call."""
    return importlib.util.find_spec("triton") is not None


def interpreted() -> bool:
    """Whether Triton runs kernels in its interpreter, on CPU tensors (TRITON_INTERPRET=1)."""
    return os.environ.get("TRITON_INTERPRET") == "1"


@functools.cache
def _kernel():
    """The kernel, defined on first use (so importing gdsoftmax never imports triton)."""
    import triton
    import triton.language as tl

    @triton.jit
    def _beta_loss_rows(logits_ptr, logits_stride, grad_ptr, grad_stride, target_ptr, weight_ptr, row_weight_ptr,
                        scale_ptr, loss_ptr, n_cols, ignore_index, beta, inv_tau, smoothing,
                        HAS_WEIGHT: tl.constexpr, HAS_ROW_WEIGHT: tl.constexpr, SMOOTH: tl.constexpr,
                        BLOCK: tl.constexpr):
        row = tl.program_id(0).to(tl.int64)
        logits_ptr += row * logits_stride
        grad_ptr += row * grad_stride
        target = tl.load(target_ptr + row).to(tl.int64)
        keep = target != ignore_index  # an ignored row is computed on class 0 and then zeroed
        target = tl.where(keep, target, 0)
        z_c = tl.load(logits_ptr + target).to(tl.float32) * inv_tau
        m = z_c  # the row's maximum (the target included)
        rest = 0.0  # sum_{j != c} e^{z_j - m}: the target left out, so nothing cancels at p_c ~ 1
        top = -1  # with smoothing: the argmax, and the sum without it (exact where that class dominates)
        rest_top = 0.0
        for start in range(0, n_cols, BLOCK):  # pass 1: running maximum and sums
            cols = start + tl.arange(0, BLOCK)
            z = tl.load(logits_ptr + cols, mask=cols < n_cols, other=float("-inf")).to(tl.float32) * inv_tau
            block_max = tl.max(z, axis=0)
            m_new = tl.maximum(m, block_max)
            shift = tl.exp(m - m_new)
            rest = rest * shift + tl.sum(tl.where(cols == target, 0.0, tl.exp(z - m_new)), axis=0)
            if SMOOTH:
                block_top = start + tl.argmax(z, axis=0)
                moves = (block_max > m) | (top < 0)  # the block holds the new maximum
                others = tl.sum(tl.where(cols == block_top, 0.0, tl.exp(z - m_new)), axis=0)
                everything = tl.sum(tl.exp(z - m_new), axis=0)
                old_top = tl.where(top < 0, 0.0, shift)  # the former maximum joins the rest
                rest_top = tl.where(moves, rest_top * shift + old_top + others, rest_top * shift + everything)
                top = tl.where(moves, block_top, top)
            m = m_new
        e_c = tl.exp(z_c - m)
        d_c = rest + beta * e_c
        sample_weight = tl.where(keep, 1.0, 0.0)
        token_weight = 1.0
        if HAS_ROW_WEIGHT:  # a weight per row (token), on top of the class weight
            token_weight = tl.load(row_weight_ptr + row).to(tl.float32)
            sample_weight = sample_weight * token_weight
        if HAS_WEIGHT:
            sample_weight = sample_weight * tl.load(weight_ptr + target).to(tl.float32)
        scale = inv_tau * tl.load(scale_ptr)  # 1 / total weight for "mean", else 1
        if SMOOTH:
            # loss = sum_k a_k J_k with a_k = w_k (eps / C + (1 - eps) [k = c]); D_k = S_{not k} + beta e_k
            total = rest_top + 1.0
            a_c = (1.0 - smoothing) * sample_weight  # the hard part; the target's whole a_c adds w_c eps / C
            a_c_all = a_c + smoothing / n_cols * sample_weight
            loss = a_c * (tl.log(d_c) + m - z_c)
            inv_sum = 0.0  # sum_{k != c} a_k / D_k
            inv_sum_no_top = 0.0  # the same without the argmax
            for start in range(0, n_cols, BLOCK):  # pass 2: the smoothed loss and sum_k a_k / D_k
                cols = start + tl.arange(0, BLOCK)
                mask = cols < n_cols
                z = tl.load(logits_ptr + cols, mask=mask, other=0.0).to(tl.float32) * inv_tau
                e = tl.exp(z - m)
                not_k = tl.where(cols == top, rest_top, tl.where(cols == target, rest, total - e))
                d = not_k + beta * e
                a = tl.where(mask & keep, smoothing / n_cols * token_weight, 0.0)
                if HAS_WEIGHT:
                    a = a * tl.load(weight_ptr + cols, mask=mask, other=0.0).to(tl.float32)
                loss += tl.sum(tl.where(mask, a * (tl.log(d) + m - z), 0.0), axis=0)
                a_over_d = tl.where(mask & (cols != target), a / d, 0.0)
                inv_sum += tl.sum(a_over_d, axis=0)
                inv_sum_no_top += tl.sum(tl.where(cols == top, 0.0, a_over_d), axis=0)
            tl.store(loss_ptr + row, loss)
            for start in range(0, n_cols, BLOCK):  # pass 3: e_i sum_{k != i} a_k / D_k - a_i S_{not i} / D_i
                cols = start + tl.arange(0, BLOCK)
                mask = cols < n_cols
                z = tl.load(logits_ptr + cols, mask=mask, other=0.0).to(tl.float32) * inv_tau
                e = tl.exp(z - m)
                not_k = tl.where(cols == top, rest_top, tl.where(cols == target, rest, total - e))
                d = not_k + beta * e
                a = tl.where(mask & keep, smoothing / n_cols * token_weight, 0.0)
                if HAS_WEIGHT:
                    a = a * tl.load(weight_ptr + cols, mask=mask, other=0.0).to(tl.float32)
                a = tl.where(cols == target, a + a_c, a)
                others = tl.where(cols == target, inv_sum,
                                  tl.where(cols == top, inv_sum_no_top, inv_sum - a / d) + a_c_all / d_c)
                grad = (e * others - a * not_k / d) * scale
                tl.store(grad_ptr + cols, grad.to(grad_ptr.dtype.element_ty), mask=mask)
        else:
            tl.store(loss_ptr + row, sample_weight * (tl.log(d_c) + m - z_c))
            for start in range(0, n_cols, BLOCK):  # pass 2: the gradient
                cols = start + tl.arange(0, BLOCK)
                mask = cols < n_cols
                z = tl.load(logits_ptr + cols, mask=mask, other=float("-inf")).to(tl.float32) * inv_tau
                grad = tl.exp(z - m) / d_c
                grad = tl.where(cols == target, beta * e_c / d_c - 1.0, grad)
                tl.store(grad_ptr + cols, (grad * sample_weight * scale).to(grad_ptr.dtype.element_ty), mask=mask)

    return _beta_loss_rows


def _block(n_cols: int) -> int:
    return min(4096, 1 << max(0, (n_cols - 1).bit_length()))  # the next power of two, at most 4096


class _TritonBetaLoss(torch.autograd.Function):
    @staticmethod
    def forward(ctx, logits, target, weight, beta, tau, ignore_index, reduction, label_smoothing, inplace):
        grad = logits if inplace else torch.empty_like(logits)  # (N, C): the gradient, written in the forward
        total = total_weight(target, weight, None, ignore_index)
        losses = rows_loss_and_grad(logits, grad, target, weight, None, mean_scale(total, reduction), beta, tau,
                                    ignore_index, label_smoothing)
        ctx.reduction = reduction
        ctx.save_for_backward(grad)
        if reduction == "none":
            return losses.to(logits.dtype)
        loss = losses.sum() / total if reduction == "mean" else losses.sum()
        return loss.to(logits.dtype)

    @staticmethod
    def backward(ctx, grad_output):
        (grad,) = ctx.saved_tensors
        if ctx.reduction == "none":  # per-row upstream gradients: the deferred scale
            # the stored rows are d(loss_i)/dz_i times weight; "none" stored scale 1
            return (grad * grad_output.to(grad.dtype)[:, None],) + (None,) * 8
        return (grad * grad_output.to(grad.dtype),) + (None,) * 8


def total_weight(target, weight, row_weight, ignore_index) -> torch.Tensor:
    """The sum of the kept rows' weights (class weight times row weight): what "mean" divides by."""
    kept = (target != ignore_index).to(torch.float32)
    if weight is not None:
        kept = kept * weight.to(torch.float32)[target.clamp_min(0)]
    if row_weight is not None:
        kept = kept * row_weight.to(torch.float32)
    return kept.sum()


def mean_scale(total: torch.Tensor, reduction: str) -> torch.Tensor:
    """(1,): 1 / total for "mean" (0 when every row is ignored: a NaN loss but a zero gradient, as
    F.cross_entropy gives), else 1."""
    one = torch.ones((), device=total.device)
    return (torch.where(total > 0, 1.0 / total, 0.0) if reduction == "mean" else one).reshape(1)


def rows_loss_and_grad(logits, grad, target, weight, row_weight, scale, beta, tau, ignore_index,
                       label_smoothing) -> torch.Tensor:
    """Launch the kernel on (N, C) logits: the rows' losses (N,) float32, their gradients times ``scale``
    written into ``grad`` (which may be ``logits``)."""
    n, c = logits.shape
    losses = torch.empty(n, dtype=torch.float32, device=logits.device)
    _kernel()[(n,)](logits, logits.stride(0), grad, grad.stride(0), target, logits if weight is None else weight,
                    logits if row_weight is None else row_weight, scale, losses, c, ignore_index, float(beta),
                    1.0 / float(tau), float(label_smoothing), HAS_WEIGHT=weight is not None,
                    HAS_ROW_WEIGHT=row_weight is not None, SMOOTH=label_smoothing > 0, BLOCK=_block(c))
    return losses


def triton_target_loss(logits: torch.Tensor, target: torch.Tensor, *, beta: float, tau: float = 1.0,
                       weight: torch.Tensor | None = None, ignore_index: int = -100, reduction: str = "mean",
                       label_smoothing: float = 0.0, inplace: bool = False) -> torch.Tensor:
    """The β-loss of (N, C) logits and (N,) class indices by the Triton kernel (see the module docstring).

    ``inplace=True`` writes the gradient over the logits (they must not be needed afterwards), so the
    loss needs no memory of the logits' size. No double backward.
    """
    if not available():
        raise RuntimeError("the triton backend needs the triton package (it comes with PyTorch on Linux)")
    return _TritonBetaLoss.apply(logits.contiguous(), target, weight, beta, tau, ignore_index, reduction,
                                 label_smoothing, inplace)
