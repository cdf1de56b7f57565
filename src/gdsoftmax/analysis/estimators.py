"""Calibration estimators of current practice, each with a bootstrap interval over test samples.

* **smECE** (smooth ECE, Błasiok & Nakkiran, ICLR 2024): the calibration error of a kernel-smoothed
  reliability curve, with the bandwidth chosen by the paper's rule; the ``relplot`` package's estimator and
  smoothed reliability curve, computed for many bootstrap resamples at once by
  :mod:`gdsoftmax.analysis.smooth_ece` (held to relplot's own values in the tests). Unlike binned ECE it
  does not jump when a confidence crosses a bin edge, and it is consistent for well-calibrated models.
* **debiased L2 ECE** (Kumar, Liang & Ma, NeurIPS 2019): the binned squared error minus each bin's
  sampling variance acc (1 - acc) / (n - 1), then the square root (0 when the correction exceeds the
  error). Binned ECE is biased upwards when the model is nearly calibrated; this one is not.
* **binned ECE** (torchmetrics' ``binary_calibration_error`` of the top-1 confidence against its
  correctness) and **adaptive ECE** (equal-mass bins), exactly as :mod:`gdsoftmax.analysis.metrics`
  computes them; the debiased L2 ECE and adaptive ECE functions are those of
  :mod:`gdsoftmax.analysis.calibration_metrics`, whose Metrics compute them in a training loop.

All take top-1 confidences (N,) and correctness (N,) in float64. A confidence of exactly 1.0 (a
saturated softmax, common at small beta) is a bin of its own in binned ECE (torchmetrics' convention)
and belongs to the last bin ((M-1)/M, 1] of the debiased L2 ECE; smECE's kernel is reflected at 0 and
1, so it needs no special case there.

>>> import torch
>>> confidence = torch.full((100,), 0.9, dtype=torch.float64)
>>> correct = (torch.arange(100) % 2).double()  # 50 % right at 90 % confidence
>>> round(binned_ece(confidence, correct, 10), 3), round(debiased_l2_ece(confidence, correct, 10), 3)
(0.4, 0.397)
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

from gdsoftmax.analysis.binned import binned_calibration_error
from gdsoftmax.analysis.calibration_compute import adaptive_ece, debiased_l2_ece
from gdsoftmax.analysis.smooth_ece import smooth_ece_batch, smooth_reliability_curve

__all__ = ["Estimate", "binned_ece", "bootstrap_interval", "calibration_estimates", "debiased_l2_ece",
           "smooth_ece", "smooth_reliability", "top1"]


@dataclass(frozen=True)
class Estimate:
    """A point estimate with its percentile-bootstrap interval."""

    value: float
    low: float
    high: float

    def format(self, scale: float = 100.0, digits: int = 2) -> str:
        return f"{scale * self.value:.{digits}f} [{scale * self.low:.{digits}f}, {scale * self.high:.{digits}f}]"


def top1(logits: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Top-1 confidence and correctness (N,), float64, from logits (N, K) and labels (N,)."""
    probs = torch.softmax(torch.as_tensor(logits).double(), 1)
    confidence, prediction = probs.max(1)
    return confidence, (prediction == torch.as_tensor(labels)).double()


def binned_ece(confidence: torch.Tensor, correct: torch.Tensor, n_bins: int = 15) -> float:
    """Equal-width binned ECE, sum over bins of (n_b / N) |acc_b - conf_b| (torchmetrics' bins and arithmetic:
    :func:`gdsoftmax.analysis.binned.binned_calibration_error`)."""
    return binned_calibration_error(confidence, correct, n_bins, "l1")


def smooth_ece(confidence: torch.Tensor, correct: torch.Tensor) -> float:
    """smECE of Błasiok & Nakkiran (2024) with its automatic bandwidth, as relplot's ``smECE`` computes it."""
    return float(smooth_ece_batch(confidence.numpy()[None], correct.numpy()[None])[0])


def _smooth_ece_of_resamples(confidence: torch.Tensor, correct: torch.Tensor) -> list[float]:
    return smooth_ece_batch(confidence.numpy(), correct.numpy()).tolist()


def smooth_reliability(confidence: torch.Tensor, correct: torch.Tensor) -> dict:
    """The smoothed reliability curve for a diagram: ``mesh``, ``mu`` (accuracy at each confidence),
    ``lower``/``upper`` (a band from 50 seeded bootstrap resamples), ``density`` of the confidences and ``ce``
    (smECE); relplot's ``prepare_rel_diagram``, computed by
    :func:`gdsoftmax.analysis.smooth_ece.smooth_reliability_curve`."""
    curve = smooth_reliability_curve(confidence.numpy(), correct.numpy(), n_bootstrap=50)
    return {key: curve[key] for key in ("mesh", "mu", "lower", "upper", "density", "ce")}


def bootstrap_interval(statistic: Callable[[torch.Tensor, torch.Tensor], float], confidence: torch.Tensor,
                       correct: torch.Tensor, n_resamples: int = 200, level: float = 0.95,
                       seed: int = 0, batched: Callable[[torch.Tensor, torch.Tensor], list[float]] | None = None
                       ) -> Estimate:
    """The statistic on the data and its percentile-bootstrap interval over resampled test samples;
    ``batched`` (optional) computes the same statistic of every resample at once from (resamples, N) rows."""
    if n_resamples < 2:
        raise ValueError(f"n_resamples must be >= 2, got {n_resamples}")
    generator = torch.Generator().manual_seed(seed)
    n = len(confidence)
    picks = torch.stack([torch.randint(n, (n,), generator=generator) for _ in range(n_resamples)])
    if batched is not None:
        values = batched(confidence[picks], correct[picks])
    else:
        values = [statistic(confidence[pick], correct[pick]) for pick in picks]
    low, high = torch.tensor(values, dtype=torch.float64).quantile(
        torch.tensor([(1 - level) / 2, (1 + level) / 2], dtype=torch.float64)).tolist()
    return Estimate(statistic(confidence, correct), low, high)


def calibration_estimates(logits: torch.Tensor, labels: torch.Tensor, n_bins: int = 15, n_resamples: int = 200,
                          seed: int = 0, names: tuple[str, ...] | None = None) -> dict[str, Estimate]:
    """Binned ECE, adaptive ECE, debiased L2 ECE and smECE of one set of predictions (or those ``names``), each
    with a 95 % bootstrap interval over test samples; each estimator's resamples come from ``seed`` alone, so
    asking for fewer changes none of the others.

    >>> torch.manual_seed(0)
    <torch._C.Generator object at ...>
    >>> logits, labels = torch.randn(500, 10), torch.randint(10, (500,))
    >>> sorted(calibration_estimates(logits, labels, n_resamples=20))
    ['adaptive ECE', 'binned ECE', 'debiased L2 ECE', 'smECE']
    """
    confidence, correct = top1(logits, labels)
    estimators = {"binned ECE": lambda f, y: binned_ece(f, y, n_bins),
                  "adaptive ECE": lambda f, y: adaptive_ece(f, y, n_bins),
                  "debiased L2 ECE": lambda f, y: debiased_l2_ece(f, y, n_bins),
                  "smECE": smooth_ece}
    unknown = set(names or ()) - set(estimators)
    if unknown:
        raise ValueError(f"unknown estimators {sorted(unknown)}; known: {', '.join(estimators)}")
    batched = {"smECE": _smooth_ece_of_resamples}
    return {name: bootstrap_interval(fn, confidence, correct, n_resamples, seed=seed, batched=batched.get(name))
            for name, fn in estimators.items() if names is None or name in names}
