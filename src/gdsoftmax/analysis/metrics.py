"""Accuracy and calibration metrics of one set of predictions, as a function on whole tensors.

:func:`calibration_metrics` gives every number of a :class:`CalibrationReport`: top-1 and top-5 accuracy, binned
ECE and MCE (Guo et al. 2017: ECE = sum_m (n_m / N) |acc_m - conf_m| over M equal-width bins, MCE the largest gap,
with torchmetrics' bins and arithmetic), adaptive ECE (equal-mass bins), classwise ECE (Kull et al. 2019: the mean
over classes k of the ECE of p_k against [y = k]), NLL, Brier (sum_k (p_k - [y = k])^2, averaged) and the
reliability bins. It computes with torch alone (:mod:`gdsoftmax.analysis.calibration_compute`), so the studies and
the engine do not import torchmetrics; :class:`gdsoftmax.analysis.calibration_metrics.CalibrationMetrics` is the
same report as a ``torchmetrics.MetricCollection`` for a distributed loop, and the tests hold the two equal.

>>> import torch
>>> logits = torch.tensor([[2.0, 0.0], [0.0, 3.0], [1.0, 0.0]])
>>> report = calibration_metrics(logits, torch.tensor([0, 1, 1]), n_bins=10)
>>> round(report.accuracy, 4), report.bins.counts.tolist()
(0.6667, [0, 0, 0, 0, 0, 0, 0, 1, 1, 1])
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from gdsoftmax.analysis.binned import BinStats, bin_sums, binned_calibration_error, top1
from gdsoftmax.analysis.calibration_compute import adaptive_ece, classwise_ece, log_probabilities, topk_accuracy

__all__ = ["BinStats", "CalibrationReport", "calibration_metrics"]

@dataclass
class CalibrationReport:
    n: int
    accuracy: float
    top5_accuracy: float
    ece: float
    mce: float
    adaptive_ece: float
    classwise_ece: float
    nll: float
    brier: float
    mean_confidence: float
    bins: BinStats

    def as_dict(self) -> dict:
        return {k: v for k, v in self.__dict__.items() if k != "bins"}


def calibration_metrics(scores: torch.Tensor, labels: torch.Tensor, n_bins: int = 15,
                        from_logits: bool = True) -> CalibrationReport:
    """All metrics of one set of predictions: (N, K) logits (or probabilities) and (N,) labels."""
    if n_bins < 1:
        raise ValueError(f"n_bins must be >= 1, got {n_bins}")
    if scores.dim() != 2 or scores.shape[1] < 2:
        raise ValueError(f"expected scores of shape (N, K) with K >= 2 classes, got {tuple(scores.shape)}")
    if labels.shape != scores.shape[:1]:
        raise ValueError(f"expected labels of shape ({scores.shape[0]},), got {tuple(labels.shape)}")
    if not len(labels):
        raise ValueError("no samples were accumulated")
    target = labels.detach().long().to(scores.device)
    log_probs = log_probabilities(scores, target, from_logits)
    probs = log_probs.exp() if from_logits else scores.detach().double()
    confidence, correct = top1(probs, target)
    counts, confidence_sums, correct_sums = bin_sums(confidence, correct, n_bins)
    occupied = counts > 0
    mean_confidence = torch.where(occupied, confidence_sums / counts.clamp_min(1), torch.nan)
    n = int(counts.sum())
    # NLL through a log-softmax of the log-probabilities (a no-op up to rounding), as the Metric class does
    nll = -F.log_softmax(log_probs, 1).gather(1, target[:, None]).sum() / n
    brier = (probs - F.one_hot(target, probs.shape[1]).double()).square().sum() / n
    # accuracy as torchmetrics' MulticlassAccuracy gives it (hits / N in float32), so that every report keeps the
    # numbers it had when the engine computed through torchmetrics
    accuracy = float(torch.tensor(float(correct.sum()), dtype=torch.float32) / torch.tensor(float(n)))
    return CalibrationReport(
        n=n, accuracy=accuracy, top5_accuracy=topk_accuracy(probs, target, 5),
        ece=binned_calibration_error(confidence, correct, n_bins, "l1"),
        mce=binned_calibration_error(confidence, correct, n_bins, "max"),
        adaptive_ece=adaptive_ece(confidence, correct, n_bins),
        classwise_ece=classwise_ece(probs, target, probs.shape[1], n_bins), nll=float(nll), brier=float(brier),
        mean_confidence=float(torch.nansum(counts * mean_confidence) / n),
        bins=BinStats(edges=torch.linspace(0, 1, n_bins + 1, dtype=torch.float64), counts=counts.long(),
                      mean_confidence=mean_confidence,
                      accuracy=torch.where(occupied, correct_sums / counts.clamp_min(1), torch.nan)))
