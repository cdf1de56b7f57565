"""Losses the β-loss is compared with: losses on logits (focal, FLSD-53, LogitNorm, label
smoothing) and margin heads that own the classifier (CosFace, ArcFace, A-Softmax, L-Softmax,
Center loss). They import only from :mod:`gdsoftmax.loss`.

>>> import torch
>>> from gdsoftmax.baselines import focal_loss
>>> focal_loss(torch.randn(4, 3), torch.tensor([0, 1, 2, 0])).shape
torch.Size([])
"""

from gdsoftmax.baselines.heads import HEADS, ArcFaceHead, CenterLossHead, CosFaceHead, LSoftmaxHead, SphereFaceHead
from gdsoftmax.baselines.logit_losses import (
    LOGIT_LOSSES,
    FLSD53Loss,
    FocalLoss,
    LabelSmoothingLoss,
    LogitNormLoss,
    flsd53_loss,
    focal_loss,
    label_smoothing_loss,
    logit_norm_loss,
)

__all__ = ["HEADS", "LOGIT_LOSSES", "ArcFaceHead", "CenterLossHead", "CosFaceHead", "FLSD53Loss", "FocalLoss",
           "LSoftmaxHead", "LabelSmoothingLoss", "LogitNormLoss", "SphereFaceHead", "flsd53_loss", "focal_loss",
           "label_smoothing_loss", "logit_norm_loss"]
