"""Baseline losses against straightforward float64 references."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from gdsoftmax.baselines.logit_losses import (
    FLSD53Loss,
    FocalLoss,
    LabelSmoothingLoss,
    LogitNormLoss,
    flsd53_loss,
    focal_loss,
    label_smoothing_loss,
    logit_norm_loss,
)


def case(seed=0, n=7, k=5, scale=3.0):
    g = torch.Generator().manual_seed(seed)
    logits = scale * torch.randn(n, k, generator=g, dtype=torch.float64)
    target = torch.randint(k, (n,), generator=g)
    return logits, target


def reference_focal(logits, target, gamma_of_p):
    """Loop over samples: -(1 - p)^gamma(p) log p."""
    losses = []
    for z, y in zip(logits, target, strict=True):
        p = math.exp(z[y].item()) / sum(math.exp(v.item()) for v in z)
        losses.append(-((1 - p) ** gamma_of_p(p)) * math.log(p))
    return torch.tensor(losses, dtype=torch.float64)


@pytest.mark.parametrize("gamma", [0.0, 1.0, 2.0, 5.0])
def test_focal_against_reference(gamma):
    logits, target = case()
    expected = reference_focal(logits, target, lambda p: gamma)
    torch.testing.assert_close(focal_loss(logits, target, gamma, reduction="none"), expected)
    torch.testing.assert_close(focal_loss(logits, target, gamma), expected.mean())
    x = logits.clone().requires_grad_(True)
    assert torch.autograd.gradcheck(lambda z: focal_loss(z, target, gamma, reduction="sum"), (x,))


def test_focal_with_gamma_zero_is_cross_entropy_with_weights_and_ignore():
    logits, target = case(1)
    target[2] = -100
    weight = torch.rand(5, dtype=torch.float64) + 0.5
    for reduction in ("none", "mean", "sum"):
        torch.testing.assert_close(focal_loss(logits, target, 0.0, weight=weight, reduction=reduction),
                                   F.cross_entropy(logits, target, weight=weight, reduction=reduction))


def test_flsd53_switches_gamma_at_p_02():
    logits, target = case(2, n=200, scale=2.0)
    expected = reference_focal(logits, target, lambda p: 5.0 if p < 0.2 else 3.0)
    torch.testing.assert_close(flsd53_loss(logits, target, reduction="none"), expected)


def test_logit_norm_against_reference():
    logits, target = case(3)
    t = 0.5
    normalised = torch.stack([z / (t * math.sqrt(sum(v.item() ** 2 for v in z))) for z in logits])
    torch.testing.assert_close(logit_norm_loss(logits, target, t), F.cross_entropy(normalised, target))
    # invariant to the scale of the logits
    torch.testing.assert_close(logit_norm_loss(7 * logits, target, t), logit_norm_loss(logits, target, t))


def test_label_smoothing_and_modules():
    logits, target = case(4)
    torch.testing.assert_close(label_smoothing_loss(logits, target, 0.2),
                               F.cross_entropy(logits, target, label_smoothing=0.2))
    torch.testing.assert_close(FocalLoss(gamma=2.0)(logits, target), focal_loss(logits, target, 2.0))
    torch.testing.assert_close(LogitNormLoss(t=0.1)(logits, target), logit_norm_loss(logits, target, 0.1))
    assert "gamma=2.0" in repr(FocalLoss(gamma=2.0))
    expected = flsd53_loss(logits, target, reduction="sum")
    torch.testing.assert_close(FLSD53Loss(reduction="sum")(logits, target), expected)
    expected = label_smoothing_loss(logits, target, 0.2)
    torch.testing.assert_close(LabelSmoothingLoss(smoothing=0.2)(logits, target), expected)


def test_bad_input():
    logits, target = case()
    with pytest.raises(ValueError, match="gamma must be >= 0"):
        focal_loss(logits, target, -1.0)
    with pytest.raises(ValueError, match="t must be a finite number > 0"):
        logit_norm_loss(logits, target, 0.0)
    with pytest.raises(IndexError, match="out of bounds"):
        focal_loss(logits, torch.full_like(target, 9))
    with pytest.raises(ValueError, match="class-index targets"):
        focal_loss(logits, torch.softmax(logits, 1))


@pytest.mark.parametrize("loss", [focal_loss, flsd53_loss, logit_norm_loss])
def test_each_loss_trains_a_linear_model(loss):
    torch.manual_seed(0)
    x = torch.randn(256, 6)
    y = (x[:, 0] + 0.5 * x[:, 1] > 0).long()
    model = torch.nn.Linear(6, 2)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.5)
    for _ in range(100):
        optimizer.zero_grad()
        loss(model(x), y).backward()
        optimizer.step()
    assert (model(x).argmax(1) == y).float().mean() > 0.95
