"""The head every model of the engine has: features -> [optional bottleneck] -> linear classifier.

>>> model = Classifier(torch.nn.Flatten(), 4, 3, penultimate_dim=2)
>>> logits, features = model(torch.zeros(5, 2, 2), return_features=True)
>>> tuple(logits.shape), tuple(features.shape)
((5, 3), (5, 2))
"""

from __future__ import annotations

import torch
from torch import nn

__all__ = ["Classifier"]


class Classifier(nn.Module):
    """A feature extractor with a linear classifier on top."""

    def __init__(self, body: nn.Module, feature_dim: int, num_classes: int, penultimate_dim: int | None = None):
        super().__init__()
        self.body = body
        self.bottleneck = nn.Linear(feature_dim, penultimate_dim) if penultimate_dim else nn.Identity()
        self.classifier = nn.Linear(penultimate_dim or feature_dim, num_classes)

    def forward(self, x: torch.Tensor, return_features: bool = False):
        features = self.bottleneck(self.body(x))  # (B, D)
        logits = self.classifier(features)  # (B, K)
        return (logits, features) if return_features else logits
