"""Accuracy and calibration metrics: one accumulator, one compute step, and a function on top.

Equal-width bins follow Guo et al. (2017): bin m holds confidences in ((m-1)/M, m/M], except
that a confidence of exactly 0 goes to the first bin. ECE = sum_m (n_m / N) |acc_m - conf_m|,
MCE = max over non-empty bins of |acc_m - conf_m|. Adaptive ECE uses M equal-mass bins of the
sorted confidences; classwise ECE (Kull et al. 2019) averages, over classes k, the ECE of p_k
against the indicator y = k. Brier is sum_k (p_k - [y = k])^2 averaged over samples.

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

__all__ = ["BinStats", "CalibrationAccumulator", "CalibrationReport", "adaptive_ece", "calibration_metrics"]


@dataclass
class BinStats:
    """Per-bin statistics for reliability diagrams; all (n_bins,)."""

    edges: torch.Tensor  # (n_bins + 1,)
    counts: torch.Tensor
    mean_confidence: torch.Tensor  # NaN for empty bins
    accuracy: torch.Tensor  # NaN for empty bins


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


def _bin_index(values: torch.Tensor, n_bins: int) -> torch.Tensor:
    """Index of the ((m-1)/M, m/M] bin of each value in [0, 1]; 0 goes to the first bin."""
    inner = torch.linspace(0, 1, n_bins + 1, dtype=torch.float64)[1:-1]
    return torch.bucketize(values.double(), inner, right=False)


def adaptive_ece(confidence: torch.Tensor, correct: torch.Tensor, n_bins: int) -> float:
    """ECE over ``n_bins`` equal-mass bins of the sorted confidences (N,), correctness (N,) in {0, 1}."""
    order = confidence.argsort()
    return float(sum((correct[chunk].sum() - confidence[chunk].sum()).abs()
                     for chunk in order.tensor_split(n_bins) if len(chunk)) / len(confidence))


class CalibrationAccumulator:
    """Accumulate batches of logits (or probabilities) and labels; ``compute()`` at the end.

    Only sufficient statistics are kept, except the top-1 confidences and correctness that
    equal-mass (adaptive) bins need: two numbers per sample.
    """

    def __init__(self, num_classes: int, n_bins: int = 15, from_logits: bool = True):
        if n_bins < 1:
            raise ValueError(f"n_bins must be >= 1, got {n_bins}")
        self.num_classes, self.n_bins, self.from_logits = num_classes, n_bins, from_logits
        self.counts = torch.zeros(n_bins, dtype=torch.float64)
        self.confidence_sums = torch.zeros(n_bins, dtype=torch.float64)
        self.correct_sums = torch.zeros(n_bins, dtype=torch.float64)
        self.class_counts = torch.zeros(num_classes, n_bins, dtype=torch.float64)  # classwise bins of p_k
        self.class_prob_sums = torch.zeros(num_classes, n_bins, dtype=torch.float64)
        self.class_hit_sums = torch.zeros(num_classes, n_bins, dtype=torch.float64)
        self.totals = torch.zeros(4, dtype=torch.float64)  # top-1 hits, top-5 hits, NLL, Brier
        self.confidences: list[torch.Tensor] = []
        self.correct: list[torch.Tensor] = []

    @torch.no_grad()
    def update(self, scores: torch.Tensor, labels: torch.Tensor) -> None:
        """scores: (N, K) logits (or probabilities if ``from_logits=False``); labels: (N,)."""
        if scores.dim() != 2 or scores.shape[1] != self.num_classes:
            raise ValueError(f"expected scores of shape (N, {self.num_classes}), got {tuple(scores.shape)}")
        if labels.shape != scores.shape[:1]:
            raise ValueError(f"expected labels of shape ({scores.shape[0]},), got {tuple(labels.shape)}")
        scores, labels = scores.detach().double().cpu(), labels.detach().long().cpu()
        if self.from_logits:
            log_probs = F.log_softmax(scores, 1)
            probs = log_probs.exp()
        else:
            probs = scores
            log_probs = scores.clamp_min(torch.finfo(torch.float64).tiny).log()
        confidence, prediction = probs.max(1)
        correct = (prediction == labels).double()
        bins = _bin_index(confidence, self.n_bins)
        self.counts += torch.bincount(bins, minlength=self.n_bins)
        self.confidence_sums += torch.bincount(bins, weights=confidence, minlength=self.n_bins)
        self.correct_sums += torch.bincount(bins, weights=correct, minlength=self.n_bins)

        onehot = F.one_hot(labels, self.num_classes).double()  # (N, K)
        flat = (_bin_index(probs, self.n_bins) + self.n_bins * torch.arange(self.num_classes)).flatten()
        size = self.num_classes * self.n_bins
        self.class_counts += torch.bincount(flat, minlength=size).view(self.num_classes, self.n_bins)
        self.class_prob_sums += torch.bincount(flat, weights=probs.flatten(), minlength=size).view_as(self.class_counts)
        self.class_hit_sums += torch.bincount(flat, weights=onehot.flatten(), minlength=size).view_as(self.class_counts)

        top_k = probs.topk(min(5, self.num_classes), dim=1).indices
        self.totals += torch.stack([correct.sum(), (top_k == labels[:, None]).any(1).double().sum(),
                                    -log_probs.gather(1, labels[:, None]).sum(), (probs - onehot).square().sum()])
        self.confidences.append(confidence)
        self.correct.append(correct)

    def compute(self) -> CalibrationReport:
        n = int(self.counts.sum())
        if n == 0:
            raise ValueError("no samples were accumulated")
        gaps = (self.correct_sums - self.confidence_sums).abs() / self.counts.clamp_min(1)  # |acc - conf| per bin
        occupied = self.counts > 0
        confidence = torch.cat(self.confidences)
        correct = torch.cat(self.correct)
        adaptive = adaptive_ece(confidence, correct, self.n_bins)
        classwise = ((self.class_hit_sums - self.class_prob_sums).abs().sum(1) / n).mean()
        hits, top5, nll, brier = (self.totals / n).tolist()
        empty = torch.full_like(self.counts, float("nan"))
        per_bin = self.counts.clamp_min(1)
        bins = BinStats(edges=torch.linspace(0, 1, self.n_bins + 1, dtype=torch.float64), counts=self.counts.long(),
                        mean_confidence=torch.where(occupied, self.confidence_sums / per_bin, empty),
                        accuracy=torch.where(occupied, self.correct_sums / per_bin, empty))
        return CalibrationReport(
            n=n, accuracy=hits, top5_accuracy=top5, ece=float((gaps * self.counts).sum() / n),
            mce=float(gaps[occupied].max()), adaptive_ece=float(adaptive), classwise_ece=float(classwise),
            nll=nll, brier=brier, mean_confidence=float(confidence.mean()), bins=bins)


def calibration_metrics(scores: torch.Tensor, labels: torch.Tensor, n_bins: int = 15,
                        from_logits: bool = True) -> CalibrationReport:
    """All metrics of one set of predictions: (N, K) logits (or probabilities) and (N,) labels."""
    accumulator = CalibrationAccumulator(scores.shape[1], n_bins, from_logits)
    accumulator.update(scores, labels)
    return accumulator.compute()
