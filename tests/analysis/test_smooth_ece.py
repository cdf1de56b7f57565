"""The batched smECE against relplot's own smECE, one set of predictions at a time."""

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from gdsoftmax.analysis.estimators import bootstrap_interval, smooth_ece
from gdsoftmax.analysis.smooth_ece import regressions_at, smooth_ece_batch, smooth_reliability_curve

relplot = pytest.importorskip("relplot")


def _relplot_rows(confidence: np.ndarray, correct: np.ndarray) -> np.ndarray:
    return np.array([relplot.smECE(f, y) for f, y in zip(confidence, correct, strict=True)])


@st.composite
def predictions(draw):
    rows, n = draw(st.integers(1, 6)), draw(st.integers(1, 400))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    sharpness = draw(st.floats(0.2, 30))
    confidence = np.clip(rng.beta(sharpness, draw(st.floats(0.1, 3)), (rows, n)), 0.05, 1.0)
    if draw(st.booleans()):  # a saturated softmax: many confidences of exactly 1.0
        confidence = np.where(rng.random((rows, n)) < 0.6, 1.0, confidence)
    accuracy_shift = draw(st.floats(-0.4, 0.4))
    correct = (rng.random((rows, n)) < np.clip(confidence + accuracy_shift, 0, 1)).astype(np.float64)
    return confidence, correct


@settings(max_examples=40, deadline=None)
@given(predictions())
def test_every_row_matches_relplot(data):
    confidence, correct = data
    np.testing.assert_allclose(smooth_ece_batch(confidence, correct), _relplot_rows(confidence, correct),
                               rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("case", ["calibrated", "all right at 1.0", "half right at 0.9", "all wrong"])
def test_edge_cases_match_relplot(case):
    n = 300
    confidence = {"calibrated": np.linspace(0.5, 1.0, n), "all right at 1.0": np.ones(n),
                  "half right at 0.9": np.full(n, 0.9), "all wrong": np.full(n, 0.99)}[case]
    correct = {"calibrated": (np.random.default_rng(0).random(n) < confidence).astype(float),
               "all right at 1.0": np.ones(n), "half right at 0.9": (np.arange(n) % 2).astype(float),
               "all wrong": np.zeros(n)}[case]
    assert smooth_ece_batch(confidence[None], correct[None])[0] == pytest.approx(relplot.smECE(confidence, correct),
                                                                                 rel=1e-9, abs=1e-12)


def test_the_bootstrap_draws_the_same_resamples_batched_or_one_at_a_time():
    torch.manual_seed(3)
    confidence = torch.rand(250, dtype=torch.float64) * 0.5 + 0.5
    correct = (torch.rand(250, dtype=torch.float64) < confidence).double()
    one_at_a_time = bootstrap_interval(lambda f, y: float(relplot.smECE(f.numpy(), y.numpy())), confidence, correct,
                                       n_resamples=30, seed=7)
    batched = bootstrap_interval(smooth_ece, confidence, correct, n_resamples=30, seed=7,
                                 batched=lambda f, y: smooth_ece_batch(f.numpy(), y.numpy()).tolist())
    assert batched.value == pytest.approx(one_at_a_time.value, rel=1e-9)
    assert batched.low == pytest.approx(one_at_a_time.low, rel=1e-9)
    assert batched.high == pytest.approx(one_at_a_time.high, rel=1e-9)


@pytest.mark.parametrize(("confidence", "correct", "message"), [
    (np.ones(5), np.ones(5), r"must both be \(B, N\) with N >= 1, got \(5,\) and \(5,\)"),
    (np.ones((2, 5)), np.ones((2, 4)), r"got \(2, 5\) and \(2, 4\)"),
    (np.ones((2, 0)), np.ones((2, 0)), r"got \(2, 0\) and \(2, 0\)"),
])
def test_bad_shapes_are_refused(confidence, correct, message):
    with pytest.raises(ValueError, match=message):
        smooth_ece_batch(confidence, correct)


def test_the_smoothed_reliability_curve_is_relplots_from_the_same_resamples():
    from relplot.estimators import KernelSmoother
    from relplot.kernels import ReflectedGaussianKernel

    rng = np.random.default_rng(4)
    confidence = np.clip(rng.beta(8, 1.2, 400), 0.1, 1.0)
    correct = (rng.random(400) < confidence - 0.05).astype(np.float64)
    curve = smooth_reliability_curve(confidence, correct, n_bootstrap=20, seed=3)
    ce, sigma = relplot.smECE(confidence, correct, return_width=True)
    assert curve["ce"] == pytest.approx(ce, rel=1e-9)
    assert curve["sigma"] == sigma
    np.testing.assert_array_equal(curve["mesh"], np.linspace(0, 1, relplot.config.plot_mesh_pts))
    np.testing.assert_allclose(curve["density"], ReflectedGaussianKernel(sigma).kde(confidence, curve["mesh"]),
                               rtol=1e-9, atol=1e-12)
    picks = np.random.default_rng(3).integers(400, size=(20, 400))  # the resamples the seed draws
    for row, pick in zip(curve["fits"], picks, strict=True):
        smoother = KernelSmoother(ReflectedGaussianKernel(sigma)).fit(confidence[pick, None], correct[pick])
        # an FFT's rounding where no confidence lies (density near 0, divided by the 1e-4 floor): 1e-8 of a
        # quantity in [0, 1]
        np.testing.assert_allclose(row, smoother.predict(curve["mesh"][:, None]), rtol=1e-9, atol=1e-8)
    np.testing.assert_allclose(curve["mu"], curve["fits"].mean(0))  # relplot's bagging averages its smoothers
    assert (curve["lower"] <= curve["mu"] + 1e-12).all()
    assert (curve["mu"] <= curve["upper"] + 1e-12).all()


def test_the_curve_is_the_same_from_the_same_seed_and_refuses_one_resample():
    confidence, correct = np.linspace(0.5, 1, 50), (np.arange(50) % 3 > 0).astype(float)
    first, again = (smooth_reliability_curve(confidence, correct, seed=1) for _ in range(2))
    np.testing.assert_array_equal(first["lower"], again["lower"])
    with pytest.raises(ValueError, match="n_bootstrap must be >= 2, got 1"):
        smooth_reliability_curve(confidence, correct, n_bootstrap=1)
    with pytest.raises(ValueError, match=r"must both be \(N,\) with N >= 1, got \(1, 50\)"):
        smooth_reliability_curve(confidence[None], correct[None])
    assert regressions_at(confidence[None], correct[None], 0.1, np.linspace(0, 1, 5)).shape == (1, 5)
