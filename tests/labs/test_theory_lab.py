"""Theory lab: neural-collapse metrics, the layer-peeled simulator, normalized margins."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from gdsoftmax.analysis.collapse import collapse_metrics, simplex_etf
from gdsoftmax.analysis.margins import homogeneous_order, margin_statistics
from gdsoftmax.engine.models.registry import build_model
from gdsoftmax.labs.peeled import PeeledRun, asm_loss, logit_gradient, simulate
from gdsoftmax.loss.functional import gradient_decay_loss


@pytest.mark.parametrize(("k", "d"), [(3, 3), (4, 8), (10, 12)])
def test_collapse_metrics_vanish_on_a_simplex_etf(k, d):
    means = simplex_etf(k, d)
    rotation, _ = torch.linalg.qr(torch.randn(d, d, dtype=torch.float64))
    means = 2.5 * means @ rotation  # scale and rotation do not matter
    labels = torch.arange(k).repeat(5)
    metrics = collapse_metrics(means[labels], labels, 0.7 * means)
    assert all(abs(v) < 1e-10 for v in metrics.values()), metrics


def test_collapse_metrics_are_positive_off_the_etf():
    k, d = 4, 8
    means, labels = simplex_etf(k, d), torch.arange(k).repeat(5)
    g = torch.Generator().manual_seed(0)
    noisy = means[labels] + 0.1 * torch.randn(len(labels), d, generator=g, dtype=torch.float64)
    skewed = means.clone()
    skewed[0] *= 2  # unequal norms
    metrics = collapse_metrics(noisy, labels, skewed)
    assert metrics["nc1"] > 1e-4
    assert metrics["nc2_classifier"] > 1e-2
    assert metrics["nc3"] > 1e-2
    assert collapse_metrics(skewed[labels], labels, skewed)["nc2_features"] > 1e-2


@pytest.mark.parametrize("beta", [0.01, 1.0, 10.0])
@pytest.mark.parametrize("tau", [1.0, 0.5])
def test_simulator_gradients_match_autograd(beta, tau):
    g = torch.Generator().manual_seed(1)
    logits = 3 * torch.randn(12, 4, generator=g, dtype=torch.float64)
    target = torch.randint(4, (12,), generator=g)
    x = logits.clone().requires_grad_(True)
    (expected,) = torch.autograd.grad(gradient_decay_loss(x, target, beta, tau=tau), x)
    torch.testing.assert_close(logit_gradient(logits, target, "beta", beta, tau), expected)
    if beta == 1.0 and tau == 1.0:
        y = logits.clone().requires_grad_(True)
        (ce,) = torch.autograd.grad(F.cross_entropy(y, target), y)
        torch.testing.assert_close(logit_gradient(logits, target, "beta", 1.0), ce)
    z = logits.clone().requires_grad_(True)
    (asm,) = torch.autograd.grad(asm_loss(z, target), z)
    torch.testing.assert_close(logit_gradient(logits, target, "asm"), asm)


def _asm_operator(run: PeeledRun) -> torch.Tensor:
    """The ASM unconstrained GD step as one matrix acting on each column of [W; H]."""
    k, n = run.num_classes, run.num_classes * run.per_class
    target = torch.arange(k).repeat_interleave(run.per_class)
    onehot = F.one_hot(target, k).double()
    a = onehot - (1 - onehot) / (k - 1)  # (N, K): z_y - mean of the others = a_i . z_i
    step = torch.zeros(k + n, k + n, dtype=torch.float64)
    step[:k, k:] = a.T / n  # -dL/dW = A^T H / N
    step[k:, :k] = a  # each feature: -N dL/dh_i = A W
    return step


def test_asm_unconstrained_dynamics_follow_their_linear_ode():
    run = PeeledRun(loss="asm", setting="unconstrained", steps=60, lr=0.01, record_every=60)
    history = simulate(run)
    g = torch.Generator().manual_seed(run.seed)
    n, k = run.num_classes * run.per_class, run.num_classes
    h0 = run.init_scale * torch.randn(n, run.dim, generator=g, dtype=torch.float64)
    w0 = run.init_scale * torch.randn(k, run.dim, generator=g, dtype=torch.float64)
    x0 = torch.cat([w0, h0])  # (K + N, d)
    m = _asm_operator(run)
    discrete = torch.linalg.matrix_power(torch.eye(k + n, dtype=torch.float64) + run.lr * m, run.steps) @ x0
    continuous = torch.linalg.matrix_exp(m * run.lr * run.steps) @ x0
    w, h = discrete[:k], discrete[k:]
    target = torch.arange(k).repeat_interleave(run.per_class)
    assert history["loss"][-1] == pytest.approx(float(asm_loss(h @ w.T, target)), rel=1e-10)
    assert history["feature_norm"][-1] == pytest.approx(float(h.norm(dim=1).mean()), rel=1e-10)
    # gradient descent with step lr approximates the flow exp(M t) to O(lr)
    assert float((discrete - continuous).norm() / continuous.norm()) < 0.02


def test_spherical_setting_stays_on_the_spheres_and_collapses():
    history = simulate(PeeledRun(loss="beta", beta=0.1, setting="spherical", steps=1500, lr=0.05))
    assert history["feature_norm"][-1] == pytest.approx(1.0)
    assert history["classifier_norm"][-1] == pytest.approx(5.0)
    assert history["nc1"][-1] < 1e-3 * history["nc1"][0]
    assert history["min_margin"][-1] > 0


def test_normalized_margin_is_invariant_to_rescaling():
    torch.manual_seed(0)
    model = build_model("homogeneous_mlp", (1, 8, 8), 10, hidden=[16, 8])
    assert homogeneous_order(model) == 3
    x, y = torch.randn(64, 1, 8, 8, dtype=torch.float32), torch.randint(10, (64,))
    before = margin_statistics(model, x, y)
    with torch.no_grad():
        for p in model.parameters():
            p.mul_(1.7)
    after = margin_statistics(model, x, y)
    assert after["normalized_margin"] == pytest.approx(before["normalized_margin"], rel=1e-5)
    assert after["min_margin"] == pytest.approx(before["min_margin"] * 1.7**3, rel=1e-5)
    assert after["parameter_norm"] == pytest.approx(before["parameter_norm"] * 1.7, rel=1e-6)


def test_smoothed_margin_lower_bounds_the_normalized_margin():
    torch.manual_seed(1)
    model = build_model("homogeneous_mlp", (1, 8, 8), 3, hidden=[16])
    x = torch.randn(30, 1, 8, 8)
    y = model(x).argmax(1)  # labels the model separates
    stats = margin_statistics(model, x, y)
    assert stats["min_margin"] > 0
    assert stats["smoothed_margin"] <= stats["normalized_margin"] + 1e-12


def test_models_with_biases_are_refused():
    with pytest.raises(ValueError, match="not homogeneous"):
        homogeneous_order(build_model("fcnn", (1, 8, 8), 10))
    assert math.isfinite(margin_statistics(build_model("homogeneous_mlp", (1, 4, 4), 2, hidden=[3]),
                                           torch.randn(5, 1, 4, 4), torch.zeros(5, dtype=torch.long))["order"])
