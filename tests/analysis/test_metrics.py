"""Calibration metrics against torchmetrics and against cases computed by hand."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torchmetrics.functional.classification import multiclass_calibration_error

from gdsoftmax.analysis.calibration import compare_post_hoc, fit_temperature, fit_vector_scaling
from gdsoftmax.analysis.calibration_metrics import CalibrationMetrics
from gdsoftmax.analysis.metrics import calibration_metrics


def random_predictions(n=2000, k=10, scale=3.0, seed=0):
    g = torch.Generator().manual_seed(seed)
    labels = torch.randint(k, (n,), generator=g)
    logits = scale * torch.randn(n, k, generator=g) + 2 * F.one_hot(labels, k)
    return logits.double(), labels


@pytest.mark.parametrize("n_bins", [10, 15])
@pytest.mark.parametrize("scale", [0.5, 3.0, 6.0])
def test_ece_and_mce_match_torchmetrics(n_bins, scale):
    logits, labels = random_predictions(scale=scale)
    ours = calibration_metrics(logits, labels, n_bins)
    probs = logits.softmax(1)
    # torchmetrics gives a confidence of exactly 1.0 a bin of its own (n_bins + 1 bins); we follow
    # Guo et al. and close the last bin at 1. Compare where that cannot matter.
    assert probs.max() < 1.0
    for norm, value in (("l1", ours.ece), ("max", ours.mce)):
        expected = multiclass_calibration_error(probs, labels, num_classes=10, n_bins=n_bins, norm=norm)
        assert value == pytest.approx(expected.item(), abs=1e-6)


def test_hand_computed_case():
    # confidences 0.9 (right), 0.9 (wrong), 0.6 (right), 0.5 (wrong) in 4 equal bins
    probs = torch.tensor([[0.9, 0.1, 0.0], [0.9, 0.1, 0.0], [0.6, 0.4, 0.0], [0.5, 0.25, 0.25]])
    labels = torch.tensor([0, 1, 0, 1])
    report = calibration_metrics(probs, labels, n_bins=4, from_logits=False)
    # the reliability bins are ((m-1)/M, m/M]: 0.5 goes to (0.25, 0.5]
    assert report.bins.counts.tolist() == [0, 1, 1, 2]
    # ECE and MCE are torchmetrics', whose bins are [(m-1)/M, m/M): 0.5 joins 0.6 in [0.5, 0.75).
    # [0.75, 1): conf 0.9, acc 0.5, gap 0.4; [0.5, 0.75): conf 0.55, acc 0.5, gap 0.05
    assert report.ece == pytest.approx((2 * 0.4 + 2 * 0.05) / 4)
    assert report.mce == pytest.approx(0.4)
    assert report.accuracy == pytest.approx(0.5)
    assert report.nll == pytest.approx(-(math.log(0.9) + math.log(0.1) + math.log(0.6) + math.log(0.25)) / 4)
    brier = ((0.1**2 + 0.1**2) + (0.9**2 + 0.9**2) + (0.4**2 + 0.4**2) + (0.5**2 + 0.75**2 + 0.25**2)) / 4
    assert report.brier == pytest.approx(brier)
    # adaptive: sorted confidences 0.5 | 0.6 | 0.9 | 0.9, one per bin
    assert report.adaptive_ece == pytest.approx((0.5 + 0.4 + 0.1 + 0.9) / 4)


def test_confidences_of_exactly_zero_and_one_land_in_the_end_bins():
    probs = torch.tensor([[1.0, 0.0], [1.0, 0.0], [0.5, 0.5]])
    report = calibration_metrics(probs, torch.tensor([0, 1, 0]), n_bins=10, from_logits=False)
    assert report.bins.counts.tolist() == [0, 0, 0, 0, 1, 0, 0, 0, 0, 2]
    assert report.bins.accuracy[-1].item() == 0.5
    assert report.bins.mean_confidence[-1].item() == 1.0
    metrics = CalibrationMetrics(2, n_bins=10, from_logits=False)
    metrics.update(probs, torch.tensor([0, 1, 0]))
    assert metrics["classwise_ece"].counts[1, 0].item() == 2  # p_1 = 0 goes to the first bin


def test_classwise_ece_hand_computed():
    probs = torch.tensor([[0.8, 0.2], [0.3, 0.7]])
    report = calibration_metrics(probs, torch.tensor([0, 0]), n_bins=2, from_logits=False)
    # class 0: bins (0,.5]: p=0.3, hit 1 -> 0.7; (.5,1]: p=0.8, hit 1 -> 0.2; class 1: 0.2 vs 0 and 0.7 vs 0
    assert report.classwise_ece == pytest.approx(((0.7 + 0.2) / 2 + (0.2 + 0.7) / 2) / 2)


def test_top5_and_accumulator_equals_one_shot():
    logits, labels = random_predictions(n=1000, k=20, seed=3)
    whole = calibration_metrics(logits, labels, 15)
    metrics = CalibrationMetrics(20, 15)
    for chunk in range(0, 1000, 128):
        metrics.update(logits[chunk : chunk + 128], labels[chunk : chunk + 128])
    batched = metrics.report()
    for key, value in whole.as_dict().items():
        assert getattr(batched, key) == pytest.approx(value, rel=1e-9, abs=1e-12), key
    top5 = (logits.topk(5, 1).indices == labels[:, None]).any(1).double().mean().item()
    assert whole.top5_accuracy == pytest.approx(top5)
    assert whole.nll == pytest.approx(F.cross_entropy(logits, labels).item())


def test_bad_shapes_and_empty():
    metrics = CalibrationMetrics(3)
    with pytest.raises(ValueError, match=r"shape \(N, 3\)"):
        metrics.update(torch.zeros(4, 2), torch.zeros(4, dtype=torch.long))
    with pytest.raises(ValueError, match="no samples"):
        metrics.report()


def test_temperature_scaling_recovers_the_temperature():
    g = torch.Generator().manual_seed(0)
    labels = torch.randint(5, (20000,), generator=g)
    calibrated = torch.randn(20000, 5, generator=g, dtype=torch.float64) + 1.5 * F.one_hot(labels, 5)
    # sample labels from the calibrated model so that T = 1 is the truth for `calibrated`
    labels = torch.multinomial(calibrated.softmax(1), 1, generator=g).squeeze(1)
    assert fit_temperature(3.0 * calibrated, labels) == pytest.approx(3.0, rel=0.05)


def test_post_hoc_lowers_nll_and_reports_parameters():
    logits, labels = random_predictions(n=4000, scale=6.0, seed=1)
    results = compare_post_hoc(logits[:2000], labels[:2000], logits[2000:], labels[2000:], n_bins=15)
    for result in results.values():
        assert result.after.nll < result.before.nll
        assert result.after.ece < result.before.ece
    assert results["temperature"].params["T"] > 1
    assert results["temperature"].after.accuracy == results["temperature"].before.accuracy
    weight, bias = fit_vector_scaling(logits[:2000], labels[:2000])
    assert weight.shape == bias.shape == (10,)
