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

import torch

from gdsoftmax.analysis.metrics import CalibrationReport, calibration_metrics
from gdsoftmax.analysis.scaling import apply_vector_scaling, fit_temperature, fit_vector_scaling

__all__ = ["PostHocResult", "apply_vector_scaling", "compare_post_hoc", "fit_temperature", "fit_vector_scaling"]


@dataclass
class PostHocResult:
    method: str
    params: dict
    before: CalibrationReport
    after: CalibrationReport


def compare_post_hoc(val_logits, val_labels, test_logits, test_labels, n_bins: int = 15) -> dict[str, PostHocResult]:
    """Fit both methods on validation, report test metrics before and after each."""
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
