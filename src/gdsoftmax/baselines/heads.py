"""Margin heads that own the classifier weight: CosFace, ArcFace, A-Softmax, L-Softmax, Center loss.

A head replaces a model's last linear layer. ``head(features)`` and ``head.get_logits(features)``
return *plain* logits (what evaluation and post-hoc calibration use); ``head.loss(features,
target)`` is the training loss with the margin applied to the true class only. The angles are
computed in float32 whatever the input precision (under fp16/bf16 autocast, 1 - 1e-7 rounds to 1
and arccos' gradient there is infinite), and the logits come back in the input's dtype. Inside
DistributedDataParallel a head is part of the wrapped model (its weight is averaged like any
other); Center loss's centres move with the counts and sums of the whole global batch.

* CosFace / AM-Softmax (Wang et al. 2018): s (cos theta_j - m [j = y]), unit features and weights.
* ArcFace (Deng et al. 2019): s cos(theta_y + m) for the true class; where theta_y + m > pi the
  usual monotone fallback cos theta_y - m sin m keeps the target logit decreasing in theta.
* A-Softmax / SphereFace (Liu et al. 2017): unit weights, ||x|| psi(theta_y) with
  psi(theta) = (-1)^k cos(m theta) - 2k on [k pi / m, (k+1) pi / m], blended with the plain
  logit as (lambda cos + psi) / (1 + lambda); lambda anneals from ``lambda_base`` towards
  ``lambda_min`` as max(lambda_min, lambda_base (1 + gamma t)^-power), a pure function of step t.
* L-Softmax (Liu et al. 2016): the same psi with unnormalised weights, ||w_y|| ||x|| psi(theta_y).
* Center loss (Wen et al. 2016): softmax CE plus lambda/2 ||x - c_y||^2; the centres are buffers
  moved towards their class means at rate alpha, not trained by the optimizer.

>>> import torch
>>> head = CosFaceHead(8, 3, s=10.0, m=0.3)
>>> features, target = torch.randn(5, 8), torch.tensor([0, 1, 2, 0, 1])
>>> head(features).shape, head.loss(features, target).shape
(torch.Size([5, 3]), torch.Size([]))
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["HEADS", "ArcFaceHead", "CenterLossHead", "CosFaceHead", "LSoftmaxHead", "SphereFaceHead",
           "angular_margin_loss", "arcface_loss", "center_loss", "cosface_loss"]


def _cosine(features: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """cos theta between each feature and each class weight, in float32 at least; (N, K)."""
    dtype = torch.promote_types(features.dtype, torch.float32)
    with torch.autocast(features.device.type, enabled=False):
        return F.normalize(features.to(dtype), dim=1) @ F.normalize(weight.to(dtype), dim=1).T


def cosface_loss(features, weight, target, s: float = 30.0, m: float = 0.35, *, reduction="mean",
                 ignore_index=-100):
    """CE of s (cos theta_j - m [j = y]); features (N, d), weight (K, d), target (N,)."""
    cos = _cosine(features, weight)
    onehot = F.one_hot(target.clamp_min(0), cos.shape[1]).to(cos.dtype)
    return F.cross_entropy(s * (cos - m * onehot), target, reduction=reduction, ignore_index=ignore_index)


def arcface_loss(features, weight, target, s: float = 30.0, m: float = 0.5, *, reduction="mean", ignore_index=-100):
    """CE of s cos(theta_y + m) for the true class and s cos theta_j for the others."""
    cos = _cosine(features, weight).clamp(-1 + 1e-7, 1 - 1e-7)
    sin = torch.sqrt(1 - cos.square())
    shifted = cos * math.cos(m) - sin * math.sin(m)  # cos(theta + m)
    # past theta + m = pi, cos(theta + m) would rise again; keep the target logit decreasing in theta
    shifted = torch.where(cos > math.cos(math.pi - m), shifted, cos - m * math.sin(m))
    onehot = F.one_hot(target.clamp_min(0), cos.shape[1]).bool()
    return F.cross_entropy(s * torch.where(onehot, shifted, cos), target, reduction=reduction,
                           ignore_index=ignore_index)


def angular_margin_loss(features, weight, target, m: int = 4, lam: float = 0.0, *, normalise_weight: bool = True,
                        reduction="mean", ignore_index=-100):
    """A-Softmax (``normalise_weight=True``) or L-Softmax: the true logit ||w|| ||x|| psi(theta) blended
    with the plain one as (lam cos + psi) / (1 + lam)."""
    dtype = torch.promote_types(features.dtype, torch.float32)  # angles in float32 at least (see above)
    features, weight = features.to(dtype), weight.to(dtype)
    weight = F.normalize(weight, dim=1) if normalise_weight else weight
    with torch.autocast(features.device.type, enabled=False):
        logits = features @ weight.T  # (N, K)
    safe = target.clamp_min(0)[:, None]
    scale = features.norm(dim=1, keepdim=True) * weight.norm(dim=1)[safe.squeeze(1)][:, None]
    cos = logits.gather(1, safe) / scale.clamp_min(1e-12)
    target_logit = scale * (lam * cos + psi(cos, m)) / (1 + lam)
    return F.cross_entropy(logits.scatter(1, safe, target_logit), target, reduction=reduction,
                           ignore_index=ignore_index)


def center_loss(features, centers, target, *, ignore_index=-100, reduction="mean"):
    """lambda-free centre term 1/2 ||x_i - c_{y_i}||^2 per sample (add lambda times it to a CE)."""
    keep = target != ignore_index
    pull = 0.5 * (features - centers[target.clamp_min(0)]).square().sum(1) * keep
    if reduction == "none":
        return pull
    return pull.sum() / keep.sum().clamp_min(1) if reduction == "mean" else pull.sum()


class _Head(nn.Module):
    def __init__(self, feature_dim: int, num_classes: int):
        super().__init__()
        self.weight = nn.Parameter(torch.empty(num_classes, feature_dim))
        nn.init.xavier_uniform_(self.weight)
        self.step = 0  # set by the training loop, for heads whose margin anneals

    def get_logits(self, features: torch.Tensor) -> torch.Tensor:
        """The plain logits (N, K), without the margin: what evaluation and calibration use."""
        return self(features)


class _ScaledCosineHead(_Head):
    """Unit features and class weights; plain logits s cos theta_j."""

    default_m = 0.0

    def __init__(self, feature_dim, num_classes, s: float = 30.0, m: float | None = None):
        super().__init__(feature_dim, num_classes)
        self.s, self.m = s, self.default_m if m is None else m

    def forward(self, features):
        return (self.s * _cosine(features, self.weight)).to(features.dtype)


class CosFaceHead(_ScaledCosineHead):
    default_m = 0.35

    def loss(self, features, target, reduction="mean", ignore_index=-100):
        return cosface_loss(features, self.weight, target, self.s, self.m, reduction=reduction,
                            ignore_index=ignore_index)


class ArcFaceHead(_ScaledCosineHead):
    default_m = 0.5

    def loss(self, features, target, reduction="mean", ignore_index=-100):
        return arcface_loss(features, self.weight, target, self.s, self.m, reduction=reduction,
                            ignore_index=ignore_index)


def psi(cos: torch.Tensor, m: int) -> torch.Tensor:
    """(-1)^k cos(m theta) - 2k for theta = arccos(cos) in [k pi / m, (k+1) pi / m]: monotone in theta."""
    theta = torch.acos(cos.clamp(-1 + 1e-7, 1 - 1e-7))
    k = torch.floor(m * theta / math.pi).detach()
    sign = 1 - 2 * torch.remainder(k, 2)  # (-1)^k
    return sign * torch.cos(m * theta) - 2 * k


class SphereFaceHead(_Head):
    """A-Softmax. ``lambda_at(step)`` is the annealed blend weight."""

    normalise_weight = True

    def __init__(self, feature_dim, num_classes, m: int = 4, lambda_base: float = 1000.0, lambda_min: float = 5.0,
                 gamma: float = 0.12, power: float = 1.0):
        super().__init__(feature_dim, num_classes)
        if not isinstance(m, int) or m < 1:
            raise ValueError(f"m is an integer angular multiplier >= 1, got {m!r}")
        self.m, self.lambda_base, self.lambda_min, self.gamma, self.power = m, lambda_base, lambda_min, gamma, power

    def lambda_at(self, step: int) -> float:
        return max(self.lambda_min, self.lambda_base * (1 + self.gamma * step) ** -self.power)

    def forward(self, features):
        weight = F.normalize(self.weight, dim=1) if self.normalise_weight else self.weight
        return features @ weight.T.to(features.dtype)  # ||w|| ||x|| cos theta; ||w|| = 1 for A-Softmax

    def loss(self, features, target, reduction="mean", ignore_index=-100):
        return angular_margin_loss(features, self.weight, target, self.m, self.lambda_at(self.step),
                                   normalise_weight=self.normalise_weight, reduction=reduction,
                                   ignore_index=ignore_index)


class LSoftmaxHead(SphereFaceHead):
    """L-Softmax: A-Softmax's margin with unnormalised weights."""

    normalise_weight = False


class CenterLossHead(nn.Module):
    """Linear classifier + softmax CE, plus lambda/2 * mean ||x - c_y||^2 with centres updated at rate alpha."""

    def __init__(self, feature_dim, num_classes, lam: float = 0.01, alpha: float = 0.5):
        super().__init__()
        self.linear = nn.Linear(feature_dim, num_classes)
        self.register_buffer("centers", torch.zeros(num_classes, feature_dim))
        self.lam, self.alpha, self.step = lam, alpha, 0

    def forward(self, features):
        return self.linear(features)

    def get_logits(self, features: torch.Tensor) -> torch.Tensor:
        """The linear classifier's logits (N, K)."""
        return self(features)

    def loss(self, features, target, reduction="mean", ignore_index=-100):
        ce = F.cross_entropy(self.linear(features), target, reduction=reduction, ignore_index=ignore_index)
        pull = center_loss(features, self.centers, target, ignore_index=ignore_index, reduction=reduction)
        keep = target != ignore_index
        if self.training and bool(keep.any()):  # centres move after the loss saw them, as in Wen et al.
            self._update_centers(features[keep].detach(), target[keep])
        return ce + self.lam * pull

    @torch.no_grad()
    def _update_centers(self, x, y):
        """c_j -= alpha * sum_{i: y_i = j} (c_j - x_i) / (1 + n_j), Wen et al.'s rule."""
        k = self.centers.shape[0]
        counts = torch.bincount(y, minlength=k).to(self.centers.dtype)  # (K,)
        sums = torch.zeros_like(self.centers).index_add_(0, y, x.to(self.centers.dtype))
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            torch.distributed.all_reduce(counts)  # the global batch's statistics on every process
            torch.distributed.all_reduce(sums)
        delta = (counts[:, None] * self.centers - sums) / (1 + counts[:, None])
        self.centers -= self.alpha * delta


HEADS = {"cosface": CosFaceHead, "arcface": ArcFaceHead, "sphereface": SphereFaceHead, "lsoftmax": LSoftmaxHead,
         "center": CenterLossHead}

