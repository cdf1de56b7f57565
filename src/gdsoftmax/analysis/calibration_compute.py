"""The calibration metrics' arithmetic on whole tensors, with torch alone: the functions the engine, the studies and
:func:`gdsoftmax.analysis.metrics.calibration_metrics` compute with, and the ``torchmetrics`` Metric classes of
:mod:`gdsoftmax.analysis.calibration_metrics` accumulate into. Importing this module does not import torchmetrics
(whose import takes seconds: it loads its audio, image and text functionals).

>>> import torch
>>> probs = torch.tensor([[0.9, 0.1], [0.9, 0.1]], dtype=torch.float64)
>>> round(classwise_ece(probs, torch.tensor([0, 1]), 2, 10), 4), topk_accuracy(probs, torch.tensor([0, 1]), 1)
(0.4, 0.5)
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from gdsoftmax.analysis.binned import bin_index, bin_sums

__all__ = ["adaptive_ece", "checked_scores", "classwise_ece", "classwise_sums", "debiased_l2_ece",
           "debiased_l2_from_bins", "log_probabilities", "probabilities", "topk_accuracy"]


def checked_scores(preds: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """``preds`` as float64 after checking shapes, and that every score is finite: a NaN or infinite logit
    would otherwise give finite, wrong binned metrics (its row's confidence lands in some bin)."""
    if preds.dim() != 2:
        raise ValueError(f"expected preds of shape (N, K), got {tuple(preds.shape)}")
    if target.shape != preds.shape[:1]:
        raise ValueError(f"expected target of shape ({preds.shape[0]},), got {tuple(target.shape)}")
    finite = torch.isfinite(preds)
    if not bool(finite.all()):
        rows = (~finite).any(1).nonzero().flatten()
        raise ValueError(f"preds holds {int((~finite).sum())} non-finite value(s) (NaN or infinity) in "
                         f"{len(rows)} row(s), the first row {int(rows[0])}: calibration metrics need finite "
                         "scores; find where the model's outputs overflow, or leave those rows out")
    return preds.detach().double()


def log_probabilities(preds: torch.Tensor, target: torch.Tensor, from_logits: bool = True) -> torch.Tensor:
    """Log-probabilities (N, K), float64, of logits (or probabilities); checks shapes.

    >>> log_probabilities(torch.zeros(1, 2), torch.tensor([0])).exp().tolist()
    [[0.5, 0.5]]
    """
    preds = checked_scores(preds, target)
    return F.log_softmax(preds, 1) if from_logits else preds.clamp_min(torch.finfo(torch.float64).tiny).log()


def probabilities(preds: torch.Tensor, target: torch.Tensor, from_logits: bool = True) -> torch.Tensor:
    """Probabilities (N, K), float64, of logits (or probabilities as they are); checks shapes.

    >>> probabilities(torch.zeros(2, 4), torch.tensor([0, 3]))[0].tolist()
    [0.25, 0.25, 0.25, 0.25]
    """
    preds = checked_scores(preds, target)
    return preds.softmax(1) if from_logits else preds


def debiased_l2_from_bins(counts: torch.Tensor, confidence_sums: torch.Tensor, correct_sums: torch.Tensor) -> float:
    """sqrt(max(0, sum_b (n_b / N) [(acc_b - conf_b)^2 - acc_b (1 - acc_b) / (n_b - 1)])); a bin with one
    sample contributes its plain squared error (its variance cannot be estimated)."""
    conf = confidence_sums / counts.clamp_min(1)
    acc = correct_sums / counts.clamp_min(1)
    variance = torch.where(counts > 1, acc * (1 - acc) / (counts - 1).clamp_min(1), torch.zeros_like(acc))
    squared = float((counts * ((acc - conf).square() - variance)).sum() / counts.sum())
    return math.sqrt(max(squared, 0.0))


def debiased_l2_ece(confidence: torch.Tensor, correct: torch.Tensor, n_bins: int = 15) -> float:
    """Debiased L2 ECE (Kumar, Liang & Ma, 2019) of top-1 confidences and correctness (N,).

    >>> confidence = torch.full((100,), 0.9, dtype=torch.float64)
    >>> round(debiased_l2_ece(confidence, (torch.arange(100) % 2).double(), 10), 3)
    0.397
    """
    return debiased_l2_from_bins(*bin_sums(confidence, correct, n_bins))


def adaptive_ece(confidence: torch.Tensor, correct: torch.Tensor, n_bins: int) -> float:
    """ECE over ``n_bins`` equal-mass bins of the sorted confidences (N,), correctness (N,) in {0, 1}.

    >>> # sorted: (0.5 wrong, 0.6 right) | (0.9, 0.9: one right); gaps |1 - 1.1| + |1 - 1.8| over 4 samples
    >>> f64 = torch.float64
    >>> round(adaptive_ece(torch.tensor([0.9, 0.9, 0.6, 0.5], dtype=f64), torch.tensor([1, 0, 1, 0], dtype=f64), 2), 6)
    0.225
    """
    order = confidence.argsort()
    return float(sum((correct[chunk].sum() - confidence[chunk].sum()).abs()
                     for chunk in order.tensor_split(n_bins) if len(chunk)) / len(confidence))


def classwise_sums(probs: torch.Tensor, target: torch.Tensor, num_classes: int, n_bins: int):
    """Per class and equal-width bin of p_k: counts, probability sums and hit sums, each (num_classes, n_bins)."""
    onehot = F.one_hot(target.to(probs.device).long(), num_classes).double()
    offsets = n_bins * torch.arange(num_classes, device=probs.device)
    flat = (bin_index(probs, n_bins) + offsets).flatten()
    size = num_classes * n_bins
    counts = torch.bincount(flat, minlength=size).view(num_classes, n_bins)
    prob_sums = torch.bincount(flat, weights=probs.flatten(), minlength=size).view_as(counts)
    hit_sums = torch.bincount(flat, weights=onehot.flatten(), minlength=size).view_as(counts)
    return counts, prob_sums, hit_sums


def classwise_ece(probs: torch.Tensor, target: torch.Tensor, num_classes: int, n_bins: int) -> float:
    """Kull et al. (2019): the mean over classes k of the binned ECE of p_k against [y = k]."""
    counts, prob_sums, hit_sums = classwise_sums(probs, target, num_classes, n_bins)
    return float(((hit_sums - prob_sums).abs().sum(1) / counts[0].sum()).mean())


def topk_accuracy(scores: torch.Tensor, target: torch.Tensor, k: int) -> float:
    """The fraction of samples whose label is among the ``k`` highest scores (all of them when k > K)."""
    top = scores.topk(min(k, scores.shape[1]), dim=1).indices
    return float((top == target.to(scores.device).long()[:, None]).any(1).double().mean())
