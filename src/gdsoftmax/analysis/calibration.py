"""Post-hoc calibration (the paper's Table 3 baselines), fitted on validation logits by NLL.

* temperature scaling: z / T, one scalar (Guo et al. 2017);
* vector scaling: w * z + b, one weight and one bias per class.

Both are fitted with L-BFGS in float64 on the held-out validation split and then applied to
the test logits; neither changes which class is predicted by temperature scaling, while vector
scaling may.

>>> import torch
>>> torch.manual_seed(0)
<torch._C.Generator object at ...>
>>> labels = torch.randint(3, (500,))
>>> logits = 3 * (torch.randn(500, 3) + 2 * torch.nn.functional.one_hot(labels, 3))  # over-confident
>>> round(fit_temperature(logits, labels), 1) > 1.5
True
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F

if TYPE_CHECKING:  # the metrics import torchmetrics: the training loop, which fits temperatures, need not
    from gdsoftmax.analysis.metrics import CalibrationReport

__all__ = ["PostHocResult", "apply_vector_scaling", "compare_post_hoc", "fit_temperature", "fit_vector_scaling"]


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


@dataclass
class PostHocResult:
    method: str
    params: dict
    before: CalibrationReport
    after: CalibrationReport


def compare_post_hoc(val_logits, val_labels, test_logits, test_labels, n_bins: int = 15) -> dict[str, PostHocResult]:
    """Fit both methods on validation, report test metrics before and after each."""
    from gdsoftmax.analysis.metrics import calibration_metrics

    val_logits, test_logits = torch.as_tensor(val_logits).double(), torch.as_tensor(test_logits).double()
    val_labels, test_labels = torch.as_tensor(val_labels).long(), torch.as_tensor(test_labels).long()
    before = calibration_metrics(test_logits, test_labels, n_bins)
    temperature = fit_temperature(val_logits, val_labels)
    weight, bias = fit_vector_scaling(val_logits, val_labels)
    return {
        "temperature": PostHocResult("temperature scaling", {"T": temperature}, before,
                                     calibration_metrics(test_logits / temperature, test_labels, n_bins)),
        "vector": PostHocResult("vector scaling", {"w": weight.tolist(), "b": bias.tolist()}, before,
                                calibration_metrics(apply_vector_scaling(test_logits, weight, bias), test_labels,
                                                    n_bins)),
    }
