"""Baseline losses on logits, with the conventions of :func:`gdsoftmax.loss.gradient_decay_loss`.

* focal loss (Lin et al. 2017): -(1 - p_y)^gamma log p_y;
* FLSD-53 (Mukhoti et al. 2020): focal loss with a sample-dependent gamma, 5 when p_y < 0.2
  and 3 otherwise (gamma is chosen from the detached p_y, as in their implementation);
* LogitNorm (Wei et al. 2022): cross-entropy of z / (t ||z||);
* label smoothing: cross-entropy against (1 - eps) one-hot + eps / K.

Each takes class-index targets of shape (N,) or (N, d1, ...), ``weight`` (per class, applied as
a factor to each sample's loss, mean normalised by the sum of those weights as PyTorch does),
``ignore_index`` and ``reduction``.

>>> import torch
>>> logits, target = torch.tensor([[2.0, 0.0, -1.0]]), torch.tensor([0])
>>> round(focal_loss(logits, target, gamma=0.0).item(), 4) == round(F.cross_entropy(logits, target).item(), 4)
True
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from gdsoftmax.loss import validation as v

__all__ = ["LOGIT_LOSSES", "FLSD53Loss", "FocalLoss", "LabelSmoothingLoss", "LogitNormLoss", "flsd53_loss",
           "focal_loss", "label_smoothing_loss", "logit_norm_loss"]


def _reduce(per_sample: torch.Tensor, target: torch.Tensor, weight, ignore_index: int, reduction: str):
    """Weight, mask ignored samples (zero loss, zero gradient) and reduce like F.cross_entropy."""
    ignored = target == ignore_index
    safe = target.masked_fill(ignored, 0)
    sample_weight = (~ignored).to(per_sample.dtype)
    if weight is not None:
        sample_weight = sample_weight * weight.to(per_sample.dtype)[safe]
    per_sample = torch.where(ignored, torch.zeros_like(per_sample), per_sample * sample_weight)
    if reduction == "none":
        return per_sample
    if reduction == "sum":
        return per_sample.sum()
    return per_sample.sum() / sample_weight.sum()


def _log_probs_of_target(logits: torch.Tensor, target: torch.Tensor, ignore_index: int):
    """log p_y for class indices, ignored samples read class 0; (N, d...)."""
    log_probs = F.log_softmax(logits.float() if logits.dtype in (torch.float16, torch.bfloat16) else logits, 1)
    safe = target.masked_fill(target == ignore_index, 0)
    return log_probs.gather(1, safe.unsqueeze(1)).squeeze(1)


def _check(logits, target, reduction, ignore_index):
    v.check_reduction(reduction)
    v.check_ignore_index(ignore_index)
    kind = v.check_input_and_target(logits, target, ignore_index)
    if kind.probabilities or kind.unbatched:
        raise ValueError("these baseline losses take batched class-index targets of shape (N,) or (N, d1, ...)")
    v.check_class_indices(target, logits.shape[1], ignore_index)


def focal_loss(logits, target, gamma: float = 2.0, *, weight=None, ignore_index: int = -100,
               reduction: str = "mean") -> torch.Tensor:
    """-(1 - p_y)^gamma log p_y per sample; gamma = 0 is cross-entropy."""
    _check(logits, target, reduction, ignore_index)
    if gamma < 0:
        raise ValueError(f"gamma must be >= 0, got {gamma!r}")
    log_p = _log_probs_of_target(logits, target, ignore_index)
    # (1 - p)^gamma through -expm1(log p): exact near p = 1, where 1 - exp(log p) cancels
    per_sample = -((-torch.expm1(log_p)).clamp_min(0) ** gamma) * log_p
    return _reduce(per_sample, target, weight, ignore_index, reduction).to(logits.dtype)


def flsd53_loss(logits, target, *, weight=None, ignore_index: int = -100, reduction: str = "mean") -> torch.Tensor:
    """FLSD-53: focal loss with gamma = 5 for samples with p_y < 0.2 and gamma = 3 otherwise."""
    _check(logits, target, reduction, ignore_index)
    log_p = _log_probs_of_target(logits, target, ignore_index)
    gamma = torch.where(log_p.detach().exp() < 0.2, 5.0, 3.0)
    per_sample = -((-torch.expm1(log_p)).clamp_min(0) ** gamma) * log_p
    return _reduce(per_sample, target, weight, ignore_index, reduction).to(logits.dtype)


def logit_norm_loss(logits, target, t: float = 0.04, *, weight=None, ignore_index: int = -100,
                    reduction: str = "mean") -> torch.Tensor:
    """Cross-entropy of the logits normalised to norm 1 / t (LogitNorm)."""
    _check(logits, target, reduction, ignore_index)
    t = v.check_positive("t", t)
    norms = torch.linalg.vector_norm(logits, dim=1, keepdim=True).clamp_min(1e-7)
    return F.cross_entropy(logits / (t * norms), target, weight=weight, ignore_index=ignore_index, reduction=reduction)


def label_smoothing_loss(logits, target, smoothing: float = 0.1, *, weight=None, ignore_index: int = -100,
                         reduction: str = "mean") -> torch.Tensor:
    """Cross-entropy with label smoothing (PyTorch's own, validated)."""
    _check(logits, target, reduction, ignore_index)
    smoothing = v.check_label_smoothing(smoothing)
    return F.cross_entropy(logits, target, weight=weight, ignore_index=ignore_index, reduction=reduction,
                           label_smoothing=smoothing)


class _LogitLoss(nn.Module):
    """Module form: keyword options stored, ``weight`` as a buffer."""

    function = staticmethod(focal_loss)

    def __init__(self, *, weight=None, ignore_index: int = -100, reduction: str = "mean", **options):
        super().__init__()
        self.options, self.ignore_index, self.reduction = options, ignore_index, v.check_reduction(reduction)
        self.register_buffer("weight", weight)

    def forward(self, logits, target):
        return self.function(logits, target, **self.options, weight=self.weight, ignore_index=self.ignore_index,
                             reduction=self.reduction)

    def extra_repr(self) -> str:
        return ", ".join(f"{k}={val}" for k, val in self.options.items())


class FocalLoss(_LogitLoss):
    """``FocalLoss(gamma=2.0)``; see :func:`focal_loss`."""

    function = staticmethod(focal_loss)


class LogitNormLoss(_LogitLoss):
    """``LogitNormLoss(t=0.04)``; see :func:`logit_norm_loss`."""

    function = staticmethod(logit_norm_loss)


class FLSD53Loss(_LogitLoss):
    """``FLSD53Loss()``; see :func:`flsd53_loss`."""

    function = staticmethod(flsd53_loss)


class LabelSmoothingLoss(_LogitLoss):
    """``LabelSmoothingLoss(smoothing=0.1)``; see :func:`label_smoothing_loss`."""

    function = staticmethod(label_smoothing_loss)


# config names (loss.name) of the losses above
LOGIT_LOSSES = {"focal": focal_loss, "flsd53": flsd53_loss, "logitnorm": logit_norm_loss,
                "label_smoothing": label_smoothing_loss}
