"""Calibration metrics as ``torchmetrics.Metric`` objects, for the estimators torchmetrics lacks.

Each keeps the states that reduce correctly across processes: sums (``dist_reduce_fx="sum"``) where
the metric has sufficient statistics (per-bin counts and sums, NLL and Brier totals), and the top-1
confidences and correctness themselves (``"cat"``) where it needs every sample (equal-mass bins,
smECE). So in a distributed loop ``compute()`` returns the metric of the union of every process's
data, like torchmetrics' own metrics. Binned ECE and MCE are torchmetrics' (``BinaryCalibrationError``
on the top-1 confidence and correctness, in float64: the multiclass class rounds confidences to
float32, which would send 1 - 1e-9 into the bin torchmetrics keeps for a confidence of exactly 1).

``update(preds, target)`` takes (N, K) logits, or probabilities with ``from_logits=False``, and (N,)
class indices, as torchmetrics' multiclass metrics do. Equal-width bins here hold ((m-1)/M, m/M]
(Guo et al. 2017), 0 in the first; torchmetrics' bins are [(m-1)/M, m/M) with 1 in a bin of its own,
so the two differ only for a confidence exactly on an edge.

>>> import torch
>>> metric = AdaptiveCalibrationError(n_bins=2)
>>> metric.update(torch.tensor([[2.0, 0.0], [0.0, 1.0]]), torch.tensor([0, 0]))  # one batch per step
>>> round(float(metric.compute()), 4)  # (|1 - 0.8808| + |0 - 0.7311|) / 2
0.4251
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torchmetrics import Metric
from torchmetrics.classification import BinaryCalibrationError
from torchmetrics.utilities import dim_zero_cat

from gdsoftmax.analysis.binned import bin_index, bin_sums, top1

__all__ = ["AdaptiveCalibrationError", "BrierScore", "ClasswiseCalibrationError", "DebiasedL2CalibrationError",
           "NegativeLogLikelihood", "ReliabilityBins", "SmoothCalibrationError", "TopKAccuracy",
           "TopLabelCalibrationError", "adaptive_ece", "bin_index", "bin_sums", "debiased_l2_ece", "log_probabilities",
           "probabilities", "top1"]


def _checked(preds: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
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
    preds = _checked(preds, target)
    return F.log_softmax(preds, 1) if from_logits else preds.clamp_min(torch.finfo(torch.float64).tiny).log()


def probabilities(preds: torch.Tensor, target: torch.Tensor, from_logits: bool = True) -> torch.Tensor:
    """Probabilities (N, K), float64, of logits (or probabilities as they are); checks shapes.

    >>> probabilities(torch.zeros(2, 4), torch.tensor([0, 3]))[0].tolist()
    [0.25, 0.25, 0.25, 0.25]
    """
    preds = _checked(preds, target)
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


class _ProbabilityMetric(Metric):
    """The common part: options, and the float64 probabilities of a batch."""

    full_state_update = False
    is_differentiable = False
    higher_is_better = False

    def __init__(self, from_logits: bool = True, **kwargs):
        super().__init__(**kwargs)
        self.from_logits = from_logits

    def _probabilities(self, preds: torch.Tensor, target: torch.Tensor):
        return probabilities(preds, target.to(preds.device).long(), self.from_logits)

    def _sum_state(self, name: str, shape: tuple[int, ...]) -> None:
        self.add_state(name, torch.zeros(shape, dtype=torch.float64), dist_reduce_fx="sum")


class ReliabilityBins(_ProbabilityMetric):
    """Per-bin count, confidence sum and hit sum of the top-1 predictions; ``compute()`` gives
    (counts, mean confidence, accuracy), NaN in empty bins: a reliability diagram's data.

    >>> bins = ReliabilityBins(n_bins=2, from_logits=False)
    >>> bins.update(torch.tensor([[0.9, 0.1], [0.3, 0.7]]), torch.tensor([0, 0]))
    >>> [[round(v, 4) for v in t.tolist()] for t in bins.compute()]
    [[0.0, 2.0], [nan, 0.8], [nan, 0.5]]
    """

    def __init__(self, n_bins: int = 15, from_logits: bool = True, **kwargs):
        super().__init__(from_logits, **kwargs)
        if n_bins < 1:
            raise ValueError(f"n_bins must be >= 1, got {n_bins}")
        self.n_bins = n_bins
        for name in ("counts", "confidence_sums", "correct_sums"):
            self._sum_state(name, (n_bins,))

    def update(self, preds: torch.Tensor, target: torch.Tensor) -> None:
        probs = self._probabilities(preds, target)
        confidence, correct = top1(probs, target.to(probs.device))
        counts, confidence_sums, correct_sums = bin_sums(confidence, correct, self.n_bins)
        self.counts += counts
        self.confidence_sums += confidence_sums
        self.correct_sums += correct_sums

    def compute(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        per_bin = self.counts.clamp_min(1)
        empty = torch.full_like(self.counts, float("nan"))
        occupied = self.counts > 0
        return (self.counts, torch.where(occupied, self.confidence_sums / per_bin, empty),
                torch.where(occupied, self.correct_sums / per_bin, empty))


class DebiasedL2CalibrationError(ReliabilityBins):
    """Kumar, Liang & Ma (2019): sqrt(max(0, sum_b (n_b / N) [(acc_b - conf_b)^2 - acc_b (1 - acc_b) / (n_b - 1)])),
    a bin with one sample contributing its plain squared error. Unbiased where binned ECE is biased up.

    >>> metric = DebiasedL2CalibrationError(n_bins=10, from_logits=False)
    >>> metric.update(torch.tensor([[0.9, 0.1]] * 100), (torch.arange(100) % 2))
    >>> round(float(metric.compute()), 3)
    0.397
    """

    def compute(self) -> torch.Tensor:
        return torch.tensor(debiased_l2_from_bins(self.counts, self.confidence_sums, self.correct_sums),
                            dtype=torch.float64)


class AdaptiveCalibrationError(_ProbabilityMetric):
    """ECE over ``n_bins`` equal-mass bins of the sorted top-1 confidences (keeps them all)."""

    def __init__(self, n_bins: int = 15, from_logits: bool = True, **kwargs):
        super().__init__(from_logits, **kwargs)
        if n_bins < 1:
            raise ValueError(f"n_bins must be >= 1, got {n_bins}")
        self.n_bins = n_bins
        self.add_state("confidence", [], dist_reduce_fx="cat")
        self.add_state("correct", [], dist_reduce_fx="cat")

    def update(self, preds: torch.Tensor, target: torch.Tensor) -> None:
        probs = self._probabilities(preds, target)
        confidence, correct = top1(probs, target.to(probs.device))
        self.confidence.append(confidence)
        self.correct.append(correct)

    def _samples(self) -> tuple[torch.Tensor, torch.Tensor]:
        # a list of batches before a distributed sync, one tensor after it
        confidence, correct = self.confidence, self.correct
        if isinstance(confidence, list) and not confidence:
            raise ValueError("no samples were accumulated")
        return dim_zero_cat(confidence), dim_zero_cat(correct)

    def compute(self) -> torch.Tensor:
        return torch.tensor(adaptive_ece(*self._samples(), self.n_bins), dtype=torch.float64)


class SmoothCalibrationError(AdaptiveCalibrationError):
    """smECE (Błasiok & Nakkiran, ICLR 2024) of the top-1 predictions, through relplot at ``compute()``."""

    def __init__(self, from_logits: bool = True, **kwargs):
        super().__init__(1, from_logits, **kwargs)

    def compute(self) -> torch.Tensor:
        try:
            import relplot
        except ImportError as error:  # an optional dependency: say how to get it
            raise ImportError("smooth ECE needs the relplot package: pip install 'gdsoftmax[experiments]' "
                              "(or pip install relplot)") from error
        confidence, correct = self._samples()
        return torch.tensor(float(relplot.smECE(confidence.cpu().numpy(), correct.cpu().numpy())),
                            dtype=torch.float64)


class ClasswiseCalibrationError(_ProbabilityMetric):
    """Kull et al. (2019): the mean over classes k of the binned ECE of p_k against [y = k].

    >>> metric = ClasswiseCalibrationError(num_classes=2, n_bins=10, from_logits=False)
    >>> metric.update(torch.tensor([[0.9, 0.1], [0.9, 0.1]]), torch.tensor([0, 1]))
    >>> round(float(metric.compute()), 4)
    0.4
    """

    def __init__(self, num_classes: int, n_bins: int = 15, from_logits: bool = True, **kwargs):
        super().__init__(from_logits, **kwargs)
        if n_bins < 1:
            raise ValueError(f"n_bins must be >= 1, got {n_bins}")
        self.num_classes, self.n_bins = num_classes, n_bins
        for name in ("counts", "prob_sums", "hit_sums"):
            self._sum_state(name, (num_classes, n_bins))

    def update(self, preds: torch.Tensor, target: torch.Tensor) -> None:
        if preds.dim() == 2 and preds.shape[1] != self.num_classes:
            raise ValueError(f"expected preds of shape (N, {self.num_classes}), got {tuple(preds.shape)}")
        probs = self._probabilities(preds, target)
        onehot = F.one_hot(target.to(probs.device).long(), self.num_classes).double()
        offsets = self.n_bins * torch.arange(self.num_classes, device=probs.device)
        flat = (bin_index(probs, self.n_bins) + offsets).flatten()
        size = self.num_classes * self.n_bins
        self.counts += torch.bincount(flat, minlength=size).view(self.num_classes, self.n_bins)
        self.prob_sums += torch.bincount(flat, weights=probs.flatten(), minlength=size).view_as(self.counts)
        self.hit_sums += torch.bincount(flat, weights=onehot.flatten(), minlength=size).view_as(self.counts)

    def compute(self) -> torch.Tensor:
        n = self.counts[0].sum()
        return ((self.hit_sums - self.prob_sums).abs().sum(1) / n).mean()


class NegativeLogLikelihood(_ProbabilityMetric):
    """Mean -log p_y over samples (natural log).

    >>> metric = NegativeLogLikelihood()
    >>> metric.update(torch.zeros(3, 4), torch.tensor([0, 1, 2]))
    >>> round(float(metric.compute()), 4) == round(math.log(4), 4)
    True
    """

    def __init__(self, from_logits: bool = True, **kwargs):
        super().__init__(from_logits, **kwargs)
        self._sum_state("total", ())
        self._sum_state("n", ())

    def update(self, preds: torch.Tensor, target: torch.Tensor) -> None:
        log_probs = log_probabilities(preds, target.to(preds.device).long(), self.from_logits)
        self.total += -log_probs.gather(1, target.to(log_probs.device).long()[:, None]).sum()
        self.n += len(target)

    def compute(self) -> torch.Tensor:
        return self.total / self.n


class BrierScore(_ProbabilityMetric):
    """Mean over samples of sum_k (p_k - [y = k])^2 (the multiclass Brier score, in [0, 2]).

    >>> metric = BrierScore(from_logits=False)
    >>> metric.update(torch.tensor([[1.0, 0.0], [0.5, 0.5]]), torch.tensor([0, 1]))
    >>> float(metric.compute())
    0.25
    """

    def __init__(self, from_logits: bool = True, **kwargs):
        super().__init__(from_logits, **kwargs)
        self._sum_state("total", ())
        self._sum_state("n", ())

    def update(self, preds: torch.Tensor, target: torch.Tensor) -> None:
        probs = self._probabilities(preds, target)
        onehot = F.one_hot(target.to(probs.device).long(), probs.shape[1]).double()
        self.total += (probs - onehot).square().sum()
        self.n += len(target)

    def compute(self) -> torch.Tensor:
        return self.total / self.n


class TopLabelCalibrationError(BinaryCalibrationError):
    """torchmetrics' binned calibration error (``norm`` "l1": ECE, "max": MCE) of the top-1 confidence
    against its correctness, from (N, K) logits or probabilities, in float64.

    >>> ece = TopLabelCalibrationError(n_bins=10, from_logits=False)
    >>> ece.update(torch.tensor([[0.9, 0.1], [0.9, 0.1]]), torch.tensor([0, 1]))
    >>> round(float(ece.compute()), 4)
    0.4
    """

    def __init__(self, n_bins: int = 15, norm: str = "l1", from_logits: bool = True, **kwargs):
        super().__init__(n_bins=n_bins, norm=norm, **kwargs)
        self.from_logits = from_logits

    def update(self, preds: torch.Tensor, target: torch.Tensor) -> None:
        probs = probabilities(preds, target.to(preds.device).long(), self.from_logits)
        confidence, correct = top1(probs, target.to(probs.device))
        super().update(confidence, correct.long())


class TopKAccuracy(_ProbabilityMetric):
    """The fraction of samples whose label is among the ``k`` highest scores.

    torchmetrics' ``MulticlassAccuracy(top_k=5)`` computes the same number but took 0.26 s per 10,000 x 10
    predictions on 2 CPU cores (a Xeon with AVX-512) against 3 ms for this one, on every evaluation.

    >>> metric = TopKAccuracy(k=2)
    >>> metric.update(torch.tensor([[3.0, 2.0, 1.0], [3.0, 2.0, 1.0]]), torch.tensor([1, 2]))
    >>> float(metric.compute())
    0.5
    """

    higher_is_better = True

    def __init__(self, k: int = 5, **kwargs):
        super().__init__(True, **kwargs)
        if k < 1:
            raise ValueError(f"k must be >= 1, got {k}")
        self.k = k
        self._sum_state("hits", ())
        self._sum_state("n", ())

    def update(self, preds: torch.Tensor, target: torch.Tensor) -> None:
        target = target.to(preds.device).long()
        top = preds.topk(min(self.k, preds.shape[1]), dim=1).indices
        self.hits += (top == target[:, None]).any(1).sum()
        self.n += len(target)

    def compute(self) -> torch.Tensor:
        return self.hits / self.n
