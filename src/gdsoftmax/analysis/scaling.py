"""Post-hoc scaling fitted by NLL on held-out logits: temperature scaling (Guo et al. 2017) and vector scaling.

Plain torch (L-BFGS in float64), so the training loop fits a language model's temperature without the
metric classes; :func:`gdsoftmax.analysis.calibration.compare_post_hoc` scores both methods.

>>> import torch
>>> logits = torch.tensor([[4.0, 0.0], [0.0, 4.0], [4.0, 0.0], [0.0, 4.0]])
>>> fit_temperature(logits, torch.tensor([0, 1, 1, 0])) > 1  # half wrong at 98 % confidence: soften
True
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

__all__ = ["apply_vector_scaling", "fit_temperature", "fit_vector_scaling"]


def _minimise_nll(params: list[torch.Tensor], transform, logits, labels, max_iter: int) -> None:
    optimizer = torch.optim.LBFGS(params, lr=0.5, max_iter=max_iter, line_search_fn="strong_wolfe")

    def closure():
        optimizer.zero_grad()
        loss = F.cross_entropy(transform(logits), labels)
        loss.backward()
        return loss

    optimizer.step(closure)


def fit_temperature(logits: torch.Tensor, labels: torch.Tensor, max_iter: int = 200) -> float:
    """The temperature T > 0 minimising the NLL of softmax(logits / T)."""
    logits, labels = logits.detach().double().cpu(), labels.long().cpu()
    log_t = torch.zeros((), dtype=torch.float64, requires_grad=True)  # T = exp(log_t) stays positive
    _minimise_nll([log_t], lambda z: z / log_t.exp(), logits, labels, max_iter)
    return float(log_t.detach().exp())


def fit_vector_scaling(logits: torch.Tensor, labels: torch.Tensor, max_iter: int = 500):
    """Per-class weights w (K,) and biases b (K,) minimising the NLL of softmax(w * logits + b)."""
    logits, labels = logits.detach().double().cpu(), labels.long().cpu()
    weight = torch.ones(logits.shape[1], dtype=torch.float64, requires_grad=True)
    bias = torch.zeros(logits.shape[1], dtype=torch.float64, requires_grad=True)
    _minimise_nll([weight, bias], lambda z: z * weight + bias, logits, labels, max_iter)
    return weight.detach(), bias.detach()


def apply_vector_scaling(logits: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
    return logits.double() * weight + bias
