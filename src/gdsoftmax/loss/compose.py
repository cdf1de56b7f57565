"""The β-loss composed on top of any per-sample cross-entropy kernel.

Per sample, with CE = -log softmax(z / tau)_c, the β-loss is exactly

    J = log(e^CE - 1 + beta) = log(expm1(CE) + beta)

(since e^CE - 1 = sum_{j != c} e^{z_j / tau} / e^{z_c / tau}). So a fast or memory-lean CE kernel
that returns per-sample losses (``reduction="none"``: PyTorch's, a compiled chunked CE,
Liger-Kernel's) gives the β-loss with two elementwise operations, and autograd gives its
gradient, dJ/dCE = e^CE / (expm1(CE) + beta) times the CE gradient.

The price is precision at tiny beta: where CE is about beta, the float32 CE's rounding (about
6e-8 relative to 1 + CE) reaches J = log(expm1(CE) + beta) divided by beta. Measured in float32
against the float64 reference (margins 2 to 25, ``tests/loss/test_compose.py``): the composed loss and
its gradient are off by about 5e-7 / beta (5e-4 at beta = 1e-3, 5e-2 at 1e-5); the direct kernels
by under 1e-6 at every beta. Compose where beta >= 0.01 or so; use the direct kernels below.

>>> import torch, torch.nn.functional as F
>>> z, t = torch.tensor([[2.0, 0.5, -1.0]]), torch.tensor([0])
>>> round(beta_loss_from_ce(F.cross_entropy(z, t, reduction="none"), 0.1).item(), 4)
-0.9864
"""

from __future__ import annotations

import torch

__all__ = ["beta_loss_from_ce"]


def beta_loss_from_ce(per_sample_ce: torch.Tensor, beta: float) -> torch.Tensor:
    """J = log(expm1(CE) + beta) per sample, from per-sample cross-entropies (any shape, >= 0)."""
    if not beta > 0:
        raise ValueError(f"beta must be > 0, got {beta}")
    return torch.log(torch.expm1(per_sample_ce) + beta)
