"""Calibration estimators of current practice: hand-computed cases, their bias on calibrated data,
smECE's saturated confidences, and the bootstrap intervals."""

import math

import pytest
import torch

from gdsoftmax.analysis.estimators import (
    binned_ece,
    bootstrap_interval,
    calibration_estimates,
    debiased_l2_ece,
    smooth_ece,
    smooth_reliability,
    top1,
)
from gdsoftmax.analysis.metrics import calibration_metrics


def test_debiased_l2_ece_by_hand():
    # bin (0.6, 0.7]: 0.65, 0.65, 0.65, 0.65 with 2 right: acc 0.5, conf 0.65, variance 0.25 / 3
    # bin (0.9, 1.0]: 0.95, 0.95 both right: acc 1, conf 0.95, variance 0
    confidence = torch.tensor([0.65] * 4 + [0.95] * 2, dtype=torch.float64)
    correct = torch.tensor([1, 1, 0, 0, 1, 1], dtype=torch.float64)
    squared = 4 / 6 * (0.15**2 - 0.25 / 3) + 2 / 6 * 0.05**2
    assert squared < 0  # the variance of four samples outweighs the gap: the estimate is clipped to 0
    assert debiased_l2_ece(confidence, correct, 10) == 0.0
    assert binned_ece(confidence, correct, 10) == pytest.approx(4 / 6 * 0.15 + 2 / 6 * 0.05)
    many = confidence.repeat(50), correct.repeat(50)  # same bins, 200 and 100 samples: the gap shows
    expected = 200 / 300 * (0.15**2 - 0.25 / 199) + 100 / 300 * 0.05**2
    assert debiased_l2_ece(*many, 10) == pytest.approx(math.sqrt(expected))


def test_binned_ece_is_biased_on_calibrated_predictions_and_the_debiased_one_is_not():
    generator = torch.Generator().manual_seed(0)
    binned, debiased_squared = [], []
    for _ in range(200):
        confidence = 0.5 + 0.5 * torch.rand(300, generator=generator, dtype=torch.float64)
        correct = (torch.rand(300, generator=generator, dtype=torch.float64) < confidence).double()  # calibrated
        binned.append(binned_ece(confidence, correct, 15))
        debiased_squared.append(debiased_l2_ece(confidence, correct, 15) ** 2)
    assert sum(binned) / 200 > 0.04  # the true calibration error is 0
    assert sum(debiased_squared) / 200 < 0.002  # clipped at 0, so slightly positive on average


def test_binned_ece_agrees_with_the_metrics_module():
    torch.manual_seed(1)
    logits, labels = 3 * torch.randn(2000, 10), torch.randint(10, (2000,))
    assert binned_ece(*top1(logits, labels), 15) == pytest.approx(calibration_metrics(logits, labels, 15).ece)


def test_smooth_ece_of_a_constant_gap_and_of_saturated_confidences():
    confidence = torch.full((400,), 0.9, dtype=torch.float64)
    correct = (torch.arange(400) % 2).double()
    assert smooth_ece(confidence, correct) == pytest.approx(0.4, abs=0.01)
    saturated = torch.ones(400, dtype=torch.float64)  # confidences of exactly 1.0 (small beta)
    assert smooth_ece(saturated, torch.ones(400, dtype=torch.float64)) == pytest.approx(0.0, abs=1e-6)
    half = smooth_ece(saturated, correct)
    assert half == pytest.approx(0.5, abs=0.01)
    curve = smooth_reliability(saturated, correct)
    assert math.isfinite(curve["ce"])
    assert all(math.isfinite(v) for v in curve["mu"])


def test_bootstrap_intervals_contain_the_estimate_and_narrow_with_more_samples():
    torch.manual_seed(2)
    widths = []
    for n in (500, 8000):
        logits, labels = 2 * torch.randn(n, 10), torch.randint(10, (n,))
        estimates = calibration_estimates(logits, labels, n_resamples=50)
        for estimate in estimates.values():
            assert estimate.low <= estimate.value + 1e-9 or estimate.value < 1e-3  # debiased ECE is clipped at 0
            assert estimate.low <= estimate.high
        widths.append(estimates["smECE"].high - estimates["smECE"].low)
    assert widths[1] < widths[0] / 2
    with pytest.raises(ValueError, match="n_resamples must be >= 2"):
        bootstrap_interval(binned_ece, torch.ones(3), torch.ones(3), n_resamples=1)
