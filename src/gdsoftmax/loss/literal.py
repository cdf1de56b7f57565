"""The paper's Eq. 25 computed literally: a reproduction option, off by default.

Both versions of the paper say that, because an over-small β made the softmax overflow, each
``e^z`` was replaced by ``e^{z - u}`` with u = 70 (arXiv v1 Eq. 25, ICLR version Eq. 21). Taken
literally, in float32, that is not the stable logsumexp this project computes everywhere else:

* ``e^{z - 70}`` is subnormal (fewer significant bits) for z below about -17.3, and is exactly 0
  below about -33.3, so very negative logits drop out of the sum;
* if the true logit is below about -33.3 its term is 0 and the loss is infinite (its gradient NaN);
* it overflows to infinity for z above about 158.7.

:func:`shifted_exp_loss` computes exactly that with plain PyTorch operations (autograd gives the
gradient, as it would in a hand-written implementation), so that a study can ask whether those
numerics, rather than β, move a result. ``loss.numerics = "paper-u70"`` in a config selects it.

>>> import torch
>>> z = torch.tensor([[2.0, 0.5, -1.0]])
>>> from gdsoftmax.loss import gradient_decay_loss
>>> bool(torch.allclose(shifted_exp_loss(z, torch.tensor([0]), 0.1), gradient_decay_loss(z, torch.tensor([0]), 0.1)))
True
>>> shifted_exp_loss(torch.tensor([[-40.0, 0.0]]), torch.tensor([0]), 1.0)  # e^{-110} is 0 in float32
tensor(inf)
"""

from __future__ import annotations

import torch

__all__ = ["NUMERICS", "PAPER_SHIFT", "shifted_exp_loss"]

PAPER_SHIFT = 70.0  # u in arXiv v1 Eq. 25 / ICLR Eq. 21
NUMERICS = ("stable", "paper-u70")  # loss.numerics: this project's logsumexp, or the literal Eq. 25


def shifted_exp_loss(logits: torch.Tensor, target: torch.Tensor, beta, tau: float = 1.0,
                     shift: float = PAPER_SHIFT) -> torch.Tensor:
    """Mean of ``-log(e^{z_c-u} / (sum_{i!=c} e^{z_i-u} + beta e^{z_c-u}))`` over the leading dims, in float32.

    Args:
        logits: (..., B, K); any leading dims (e.g. M stacked runs) are kept in the result.
        target: (..., B) class indices.
        beta: a number, or a tensor broadcastable to the leading dims (one β per stacked run).
        tau: temperature; the logits are divided by it before the shift.
        shift: u (70 in the paper).

    Returns:
        The mean over B, of shape ``logits.shape[:-2]``.
    """
    z = logits.float() / tau - shift  # (..., B, K): float32, as the paper's models ran
    e = torch.exp(z)  # subnormal or 0 far below the shift: the point of this function
    index = target.long().unsqueeze(-1)  # (..., B, 1)
    true = e.gather(-1, index).squeeze(-1)  # (..., B)
    beta = torch.as_tensor(beta, dtype=e.dtype, device=e.device)
    beta = beta.reshape(beta.shape + (1,) * (true.dim() - beta.dim()))  # (...,) -> (..., 1)
    others = e.scatter(-1, index, 0.0).sum(-1)  # sum over i != c, as the formula is written
    return (-torch.log(true / (others + beta * true))).mean(-1)
