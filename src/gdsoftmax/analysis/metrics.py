"""Accuracy and calibration metrics of one set of predictions: a torchmetrics collection and a function on top.

:class:`CalibrationMetrics` is a ``torchmetrics.MetricCollection``: torchmetrics' top-1 accuracy and
binned ECE/MCE (Guo et al. 2017: ECE = sum_m (n_m / N) |acc_m - conf_m| over M equal-width bins,
MCE the largest gap), and :mod:`gdsoftmax.analysis.calibration_metrics` for what torchmetrics lacks:
adaptive ECE (equal-mass bins), classwise ECE (Kull et al. 2019: the mean over classes k of the ECE of
p_k against [y = k]), NLL, Brier (sum_k (p_k - [y = k])^2, averaged), top-5 accuracy and the reliability bins. Being
Metrics, they sync across processes in a distributed loop; the engine evaluates through the same objects.

>>> import torch
>>> logits = torch.tensor([[2.0, 0.0], [0.0, 3.0], [1.0, 0.0]])
>>> report = calibration_metrics(logits, torch.tensor([0, 1, 1]), n_bins=10)
>>> round(report.accuracy, 4), report.bins.counts.tolist()
(0.6667, [0, 0, 0, 0, 0, 0, 0, 1, 1, 1])
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torchmetrics import MetricCollection
from torchmetrics.classification import MulticlassAccuracy

from gdsoftmax.analysis.binned import BinStats
from gdsoftmax.analysis.calibration_metrics import (
    AdaptiveCalibrationError,
    BrierScore,
    ClasswiseCalibrationError,
    NegativeLogLikelihood,
    ReliabilityBins,
    TopKAccuracy,
    TopLabelCalibrationError,
    log_probabilities,
)

__all__ = ["BinStats", "CalibrationMetrics", "CalibrationReport", "calibration_metrics"]


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


class CalibrationMetrics(MetricCollection):
    """Every metric of :class:`CalibrationReport`, as one ``MetricCollection``: ``update(preds, target)``
    per batch with (N, K) logits (or probabilities if ``from_logits=False``) and (N,) labels, then
    :meth:`report`. Adaptive ECE keeps the top-1 confidence and correctness of every sample (two
    numbers each); the rest keep sums.

    >>> metrics = CalibrationMetrics(num_classes=2, n_bins=10)
    >>> metrics.update(torch.tensor([[2.0, 0.0], [0.0, 1.0]]), torch.tensor([0, 0]))
    >>> metrics.report().accuracy
    0.5
    """

    def __init__(self, num_classes: int, n_bins: int = 15, from_logits: bool = True):
        if n_bins < 1:
            raise ValueError(f"n_bins must be >= 1, got {n_bins}")
        if num_classes < 2:
            raise ValueError(f"num_classes must be >= 2, got {num_classes}")
        # The members see probabilities (the softmax is taken once per batch, in update) and NLL sees
        # log-probabilities, which its log-softmax leaves as they are: no precision lost in log(p).
        super().__init__({
            "accuracy": MulticlassAccuracy(num_classes, average="micro", validate_args=False),
            "top5_accuracy": TopKAccuracy(5),
            "ece": TopLabelCalibrationError(n_bins, "l1", from_logits=False),
            "mce": TopLabelCalibrationError(n_bins, "max", from_logits=False),
            "adaptive_ece": AdaptiveCalibrationError(n_bins, from_logits=False),
            "classwise_ece": ClasswiseCalibrationError(num_classes, n_bins, from_logits=False),
            "nll": NegativeLogLikelihood(from_logits=True), "brier": BrierScore(from_logits=False),
            "bins": ReliabilityBins(n_bins, from_logits=False)}, compute_groups=False)
        self.num_classes, self.n_bins, self.from_logits = num_classes, n_bins, from_logits

    def update(self, preds: torch.Tensor, target: torch.Tensor) -> None:  # type: ignore[override]
        if preds.dim() != 2 or preds.shape[1] != self.num_classes:
            raise ValueError(f"expected scores of shape (N, {self.num_classes}), got {tuple(preds.shape)}")
        if target.shape != preds.shape[:1]:
            raise ValueError(f"expected labels of shape ({preds.shape[0]},), got {tuple(target.shape)}")
        target = target.detach().long().to(preds.device)
        log_probs = log_probabilities(preds, target, self.from_logits)
        probs = log_probs.exp() if self.from_logits else preds.detach().double()
        for name, metric in self.items(keep_base=True, copy_state=False):
            metric.update(log_probs if name == "nll" else probs, target)

    def report(self) -> CalibrationReport:
        """The metrics of everything accumulated (across processes, in a distributed run)."""
        if not self["adaptive_ece"].update_called:
            raise ValueError("no samples were accumulated")
        values = self.compute()  # synced across processes; the local states stay as they were
        # torchmetrics squeezes one-element results: keep the bins (n_bins,) even when n_bins = 1
        counts, mean_confidence, accuracy = (tensor.reshape(-1) for tensor in values.pop("bins"))
        n = int(counts.sum())
        scalars = {key: float(value) for key, value in values.items()}
        return CalibrationReport(
            n=n, mean_confidence=float(torch.nansum(counts * mean_confidence) / n), **scalars,
            bins=BinStats(edges=torch.linspace(0, 1, self.n_bins + 1, dtype=torch.float64), counts=counts.long(),
                          mean_confidence=mean_confidence, accuracy=accuracy))


def calibration_metrics(scores: torch.Tensor, labels: torch.Tensor, n_bins: int = 15,
                        from_logits: bool = True) -> CalibrationReport:
    """All metrics of one set of predictions: (N, K) logits (or probabilities) and (N,) labels."""
    metrics = CalibrationMetrics(scores.shape[1], n_bins, from_logits).to(scores.device)
    metrics.update(scores, labels)
    return metrics.report()
