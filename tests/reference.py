"""An independent float64 reference of the gradient-decay loss, written from the formula.

Values use the identity J(z, k) = logsumexp(d) with d_i = (z_i - z_k)/tau for i != k and
d_k = log beta. Gradients use the closed form with p = softmax(z / tau):
dJ/dz_i = p_i / (tau (1 + (beta-1) p_k)) for i != k and
dJ/dz_k = -(1 - p_k) / (tau (1 + (beta-1) p_k)).
Nothing here calls gdsoftmax. The target semantics are spelled out as coefficients a_k
with loss = sum_k a_k J(z, k), following the documentation of F.cross_entropy.
"""

from __future__ import annotations

import math

import torch


def all_class_losses(z: torch.Tensor, beta: float, tau: float) -> tuple[torch.Tensor, torch.Tensor]:
    """For logits z (M, C): J (M, C) with J[n, k] = J(z_n, k), and its gradient (M, C, C) = dJ[n,k]/dz[n,i]."""
    z = z.double()
    m, c = z.shape
    values = torch.empty(m, c, dtype=torch.float64)
    grads = torch.empty(m, c, c, dtype=torch.float64)
    p = torch.softmax(z / tau, dim=1)
    for k in range(c):
        d = (z - z[:, k : k + 1]) / tau
        d[:, k] = math.log(beta)
        values[:, k] = torch.logsumexp(d, dim=1)
        others = torch.ones(c, dtype=torch.bool)
        others[k] = False
        one_minus_pk = p[:, others].sum(1)  # 1 - p_k, summed so it stays exact near p_k = 1
        scale = one_minus_pk + beta * p[:, k]  # 1 + (beta - 1) p_k
        g = p / (tau * scale[:, None])
        g[:, k] = -one_minus_pk / (tau * scale)
        grads[:, k, :] = g
    return values, grads


def reference_loss(input, target, beta=1.0, *, tau=1.0, weight=None, ignore_index=-100,
                   reduction="mean", label_smoothing=0.0):
    """Return (loss, d loss.sum() / d input), both float64."""
    x = input.detach().double()
    unbatched = x.dim() == 1
    if unbatched:
        x = x[None]
    c = x.shape[1]
    flat = x.movedim(1, -1).reshape(-1, c)  # (M, C)
    w = torch.ones(c, dtype=torch.float64) if weight is None else weight.double()
    probabilities = target.shape == input.shape
    if probabilities:
        q = target.detach().double()
        q = (q[None] if unbatched else q).movedim(1, -1).reshape(-1, c)
        q = q * (1 - label_smoothing) + label_smoothing / c
        coeff = q * w  # sum_k w_k q_k J_k per sample
        normaliser = float(flat.shape[0])  # PyTorch: mean over samples, not over weights
    else:
        t = target.reshape(-1).long()
        keep = t != ignore_index
        onehot = torch.zeros(len(t), c, dtype=torch.float64)
        onehot[keep, t[keep]] = 1.0
        dist = onehot * (1 - label_smoothing) + label_smoothing / c * keep[:, None].double()
        coeff = dist * w
        normaliser = float((onehot * w).sum())  # sum of w_y over kept samples
    values, grads = all_class_losses(flat, beta, tau)
    per_sample = (coeff * values).sum(1)  # (M,)
    per_sample_grad = (coeff[:, :, None] * grads).sum(1)  # (M, C)
    if reduction == "none":
        loss, grad_scale = per_sample, 1.0
        loss = loss.reshape(x.shape[:1] + x.shape[2:])
        if unbatched:
            loss = loss[0]
    elif reduction == "sum":
        loss, grad_scale = per_sample.sum(), 1.0
    else:
        loss = per_sample.sum() / normaliser if normaliser else torch.tensor(float("nan"), dtype=torch.float64)
        grad_scale = 1.0 / normaliser if normaliser else 0.0
    grad = (per_sample_grad * grad_scale).reshape(*x.shape[:1], *x.shape[2:], c).movedim(-1, 1)
    return loss, grad[0] if unbatched else grad
