"""Equal-width binned calibration error in plain torch: what the training loop measures every epoch.

The engine evaluates through these functions and not through torchmetrics, whose import (its
audio, image and text functionals, scipy's signal module, torchvision's models) costs seconds in
every process that trains. The numbers are torchmetrics' own: :func:`binned_calibration_error`
is ``torchmetrics.functional.classification.binary_calibration_error`` written out (bins
[(m-1)/M, m/M) and a bin of its own for a confidence of exactly 1, counts as weights), and a test
holds the two equal to the last bit. The Metric classes of
:mod:`gdsoftmax.analysis.calibration_metrics` (which do import torchmetrics) build on the same
helpers.

>>> confidence = torch.tensor([0.9, 0.9, 0.6, 0.6], dtype=torch.float64)
>>> correct = torch.tensor([1.0, 0.0, 1.0, 1.0], dtype=torch.float64)
>>> round(binned_calibration_error(confidence, correct, 10), 4)  # (2 |0.5 - 0.9| + 2 |1 - 0.6|) / 4
0.4
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

__all__ = ["ECE_BINS", "BinStats", "Reliability", "bin_index", "bin_sums", "binned_calibration_error", "reliability",
           "top1", "top1_of_logits"]

ECE_BINS = 15  # equal-width bins of every ECE and MCE gdsoftmax prints (Guo et al.'s 15); the paper's tables use 10


@dataclass
class BinStats:
    """Per-bin statistics for reliability diagrams; all (n_bins,)."""

    edges: torch.Tensor  # (n_bins + 1,)
    counts: torch.Tensor
    mean_confidence: torch.Tensor  # NaN for empty bins
    accuracy: torch.Tensor  # NaN for empty bins


@dataclass
class Reliability:
    """What a tracker shows of a run's test predictions: accuracy, binned ECE and MCE, and the bins."""

    accuracy: float
    ece: float
    mce: float
    bins: BinStats


def top1(probs: torch.Tensor, target: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Top-1 confidence and correctness (N,), float64.

    >>> top1(torch.tensor([[0.7, 0.3], [0.4, 0.6]]), torch.tensor([0, 0]))
    (tensor([0.7000, 0.6000]), tensor([1., 0.]))
    """
    confidence, prediction = probs.max(1)
    return confidence, (prediction == target).to(confidence.dtype)


def top1_of_logits(logits: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Top-1 confidence and correctness (N,), float64, of logits (N, K): the softmax taken in float64."""
    return top1(torch.softmax(torch.as_tensor(logits).double(), 1), torch.as_tensor(labels).to(logits.device))


def bin_index(values: torch.Tensor, n_bins: int) -> torch.Tensor:
    """Index of the ((m-1)/M, m/M] bin of each value in [0, 1]; 0 goes to the first bin (Guo et al. 2017).

    >>> bin_index(torch.tensor([0.0, 0.1, 0.5, 0.51, 1.0]), 2).tolist()
    [0, 0, 0, 1, 1]
    """
    inner = torch.linspace(0, 1, n_bins + 1, dtype=torch.float64, device=values.device)[1:-1]
    return torch.bucketize(values.double(), inner, right=False)


def bin_sums(confidence: torch.Tensor, correct: torch.Tensor, n_bins: int):
    """Per equal-width bin of :func:`bin_index`: sample count, confidence sum and hit sum (each (n_bins,), float64)."""
    index = bin_index(confidence, n_bins)
    return (torch.bincount(index, minlength=n_bins).double(),
            torch.bincount(index, weights=confidence.double(), minlength=n_bins),
            torch.bincount(index, weights=correct.double(), minlength=n_bins))


@torch.no_grad()
def binned_calibration_error(confidence: torch.Tensor, correct: torch.Tensor, n_bins: int = 15,
                             norm: str = "l1") -> float:
    """ECE (``norm="l1"``: sum over bins of (n_b / N) |acc_b - conf_b|) or MCE (``"max"``) of top-1 confidences
    and their correctness, with torchmetrics' equal-width bins and arithmetic (see the module docstring)."""
    if norm not in ("l1", "max"):
        raise ValueError(f"norm must be 'l1' (ECE) or 'max' (MCE), got {norm!r}")
    confidence = confidence.double()
    accuracies = correct.to(confidence.dtype)
    edges = torch.linspace(0, 1, n_bins + 1, dtype=confidence.dtype, device=confidence.device)
    index = torch.bucketize(confidence, edges, right=True) - 1
    counts = torch.zeros(len(edges), dtype=confidence.dtype, device=confidence.device)
    counts.scatter_add_(0, index, torch.ones_like(confidence))
    conf_bin = torch.zeros_like(counts).scatter_add_(0, index, confidence)
    conf_bin = torch.nan_to_num(conf_bin / counts)
    acc_bin = torch.zeros_like(counts).scatter_add_(0, index, accuracies)
    acc_bin = torch.nan_to_num(acc_bin / counts)
    if norm == "max":
        return float(torch.max(torch.abs(acc_bin - conf_bin)))
    return float(torch.sum(torch.abs(acc_bin - conf_bin) * (counts / counts.sum())))


def reliability(logits: torch.Tensor, labels: torch.Tensor, n_bins: int = 15) -> Reliability:
    """Accuracy, ECE and MCE (torchmetrics' binning, as the reports) and the reliability diagram's bins of
    logits (N, K), computed without torchmetrics.

    >>> r = reliability(torch.tensor([[2.0, 0.0], [0.0, 3.0], [1.0, 0.0]]), torch.tensor([0, 1, 1]), 10)
    >>> round(r.accuracy, 4), r.bins.counts.tolist()
    (0.6667, [0, 0, 0, 0, 0, 0, 0, 1, 1, 1])
    """
    confidence, correct = top1_of_logits(logits, labels)
    counts, confidence_sums, correct_sums = bin_sums(confidence, correct, n_bins)
    empty = counts == 0
    bins = BinStats(torch.linspace(0, 1, n_bins + 1, dtype=torch.float64), counts.long(),
                    torch.where(empty, torch.nan, confidence_sums / counts.clamp_min(1)),
                    torch.where(empty, torch.nan, correct_sums / counts.clamp_min(1)))
    return Reliability(float(correct.mean()), binned_calibration_error(confidence, correct, n_bins, "l1"),
                       binned_calibration_error(confidence, correct, n_bins, "max"), bins)
