"""Normalized margins of homogeneous networks (Lyu & Li, "Gradient Descent Maximizes the Margin
of Homogeneous Neural Networks").

A model is homogeneous of order L when f(c * theta; x) = c^L f(theta; x) for c > 0, as a
bias-free ReLU network with L linear layers is. With q_i = z_{y_i} - max_{j != y_i} z_j:

* normalized margin  gamma = min_i q_i / ||theta||^L
* smoothed margin    gamma~ = log(1 / (exp(L_CE) - 1)) / ||theta||^L, with L_CE the *summed*
  cross-entropy; it lower-bounds gamma and increases along gradient flow once the data are
  separated (the paper's result for the cross-entropy loss, as we read it).

>>> model = nn.Sequential(nn.Linear(64, 32, bias=False), nn.ReLU(), nn.Linear(32, 10, bias=False))
>>> x, y = torch.randn(16, 64), torch.randint(10, (16,))
>>> m = margin_statistics(model, x, y)
>>> sorted(m)
['min_margin', 'normalized_margin', 'order', 'parameter_norm', 'smoothed_margin']
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["homogeneous_order", "logit_margins", "margin_statistics"]


def homogeneous_order(model: nn.Module) -> int:
    """L for a bias-free chain of linear layers and ReLUs: the number of linear/conv layers."""
    layers = [m for m in model.modules() if isinstance(m, nn.Linear | nn.Conv2d)]
    if any(m.bias is not None for m in layers):
        raise ValueError("the model has biases, so it is not homogeneous; normalized margins need bias-free layers")
    return len(layers)


@torch.no_grad()
def logit_margins(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """q_i = z_{y_i} - max_{j != y_i} z_j for logits (N, K) and labels (N,): the margin of each sample.

    >>> logit_margins(torch.tensor([[3.0, 1.0, 2.0]]), torch.tensor([0])).tolist()
    [1.0]
    """
    true = logits.gather(1, labels[:, None]).squeeze(1)
    return true - logits.scatter(1, labels[:, None], -math.inf).amax(1)


def margin_statistics(model: nn.Module, inputs: torch.Tensor, labels: torch.Tensor,
                      batch_size: int = 2048) -> dict[str, float]:
    """Minimum margin, normalized and smoothed margins, ||theta|| and L, over (inputs, labels)."""
    order = homogeneous_order(model)
    was_training = model.training
    model.eval()
    logits = torch.cat([model(inputs[i : i + batch_size]) for i in range(0, len(inputs), batch_size)]).double()
    model.train(was_training)
    margins = logit_margins(logits, labels)
    norm = torch.sqrt(sum(p.double().square().sum() for p in model.parameters()))
    scale = norm**order
    total_ce = F.cross_entropy(logits, labels, reduction="sum")
    # log(1 / (e^L - 1)) = -log(expm1(L)), finite for every L > 0
    smoothed = -torch.log(torch.expm1(total_ce)) / scale
    return {"min_margin": float(margins.min()), "normalized_margin": float(margins.min() / scale),
            "smoothed_margin": float(smoothed), "parameter_norm": float(norm), "order": order}
