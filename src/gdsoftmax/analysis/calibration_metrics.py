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

import torch
from torchmetrics import Metric, MetricCollection
from torchmetrics.classification import BinaryCalibrationError, MulticlassAccuracy
from torchmetrics.utilities import dim_zero_cat

from gdsoftmax.analysis.binned import bin_index, bin_sums, top1
from gdsoftmax.analysis.calibration_compute import (
    adaptive_ece,
    classwise_sums,
    debiased_l2_ece,
    debiased_l2_from_bins,
    log_probabilities,
    probabilities,
)
from gdsoftmax.analysis.estimators import smooth_ece
from gdsoftmax.analysis.metrics import BinStats, CalibrationReport

__all__ = ["AdaptiveCalibrationError", "BrierScore", "CalibrationMetrics", "ClasswiseCalibrationError",
           "DebiasedL2CalibrationError", "NegativeLogLikelihood", "ReliabilityBins", "SmoothCalibrationError",
           "TopKAccuracy", "TopLabelCalibrationError", "adaptive_ece", "bin_index", "bin_sums", "debiased_l2_ece",
           "log_probabilities", "probabilities", "top1"]


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
    """smECE (Błasiok & Nakkiran, ICLR 2024) of the top-1 predictions at ``compute()``: relplot's estimator,
    computed by :func:`gdsoftmax.analysis.estimators.smooth_ece` as the reports compute it."""

    def __init__(self, from_logits: bool = True, **kwargs):
        super().__init__(1, from_logits, **kwargs)

    def compute(self) -> torch.Tensor:
        confidence, correct = self._samples()
        return torch.tensor(smooth_ece(confidence.cpu().double(), correct.cpu().double()), dtype=torch.float64)


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
        counts, prob_sums, hit_sums = classwise_sums(probs, target, self.num_classes, self.n_bins)
        self.counts += counts
        self.prob_sums += prob_sums
        self.hit_sums += hit_sums

    def compute(self) -> torch.Tensor:
        n = self.counts[0].sum()
        return ((self.hit_sums - self.prob_sums).abs().sum(1) / n).mean()


class NegativeLogLikelihood(_ProbabilityMetric):
    """Mean -log p_y over samples (natural log).

    >>> metric = NegativeLogLikelihood()
    >>> metric.update(torch.zeros(3, 4), torch.tensor([0, 1, 2]))
    >>> round(float(metric.compute()), 4) == round(float(torch.tensor(4.0).log()), 4)
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
        onehot = torch.nn.functional.one_hot(target.to(probs.device).long(), probs.shape[1]).double()
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
