"""The closed forms of gdsoftmax.theory against autograd applied to the loss itself."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from gdsoftmax import gradient_decay_loss, theory

BETAS = [0.001, 0.1, 0.5, 1.0, 2.0, 50.0]
M = 10  # classes


def true_logit_for(p_c, num_classes=M, other=0.0, tau=1.0):
    """z_c such that softmax puts p_c on class 0 when the other logits equal ``other``."""
    return other + tau * torch.log(p_c * (num_classes - 1) / (1 - p_c))


def loss_of_true_logit(z_c, beta, num_classes=M, other=0.0, tau=1.0):
    """J as a differentiable function of the true logit alone (batch of z_c values)."""
    rest = torch.full((z_c.shape[0], num_classes - 1), other, dtype=z_c.dtype)
    logits = torch.cat([z_c[:, None], rest], dim=1)
    return gradient_decay_loss(logits, torch.zeros(len(z_c), dtype=torch.long), beta, tau=tau, reduction="none")


def z_derivatives(p_c, beta, tau=1.0):
    """J, dJ/dz_c, d2J/dz_c2, d3J/dz_c3 by autograd at the given confidences."""
    z = true_logit_for(p_c, tau=tau).requires_grad_(True)
    loss = loss_of_true_logit(z, beta, tau=tau)
    (d1,) = torch.autograd.grad(loss.sum(), z, create_graph=True)
    (d2,) = torch.autograd.grad(d1.sum(), z, create_graph=True)
    (d3,) = torch.autograd.grad(d2.sum(), z)
    return loss.detach(), d1.detach(), d2.detach(), d3


P = torch.linspace(0.01, 0.99, 41, dtype=torch.float64)


@pytest.mark.parametrize("tau", [1.0, 0.5])
@pytest.mark.parametrize("beta", BETAS)
def test_loss_and_its_z_derivatives(beta, tau):
    loss, d1, d2, d3 = z_derivatives(P, beta, tau)
    torch.testing.assert_close(loss, theory.loss_value(P, beta))
    torch.testing.assert_close(-d1 * tau, theory.gradient_magnitude(P, beta))
    torch.testing.assert_close(d2, theory.loss_dz2(P, beta, tau))
    torch.testing.assert_close(d3, theory.loss_dz3(P, beta, tau))


@pytest.mark.parametrize("beta", BETAS)
def test_gradient_magnitude_p_derivatives_eq12_eq13(beta):
    p = P.clone().requires_grad_(True)
    z = true_logit_for(p)  # differentiable in p
    loss = loss_of_true_logit(z, beta)
    (dz,) = torch.autograd.grad(loss.sum(), z, create_graph=True)
    magnitude = -dz  # G as a function of p, through the loss
    (dg,) = torch.autograd.grad(magnitude.sum(), p, create_graph=True)
    (dg2,) = torch.autograd.grad(dg.sum(), p)
    torch.testing.assert_close(dg.detach(), theory.gradient_magnitude_dp(P, beta))
    torch.testing.assert_close(dg2, theory.gradient_magnitude_dp2(P, beta))


@pytest.mark.parametrize("beta", BETAS)
def test_inflection_point_is_where_the_curvature_peaks(beta):
    z_grid = torch.linspace(-20, 30, 200_001, dtype=torch.float64).requires_grad_(True)
    loss = loss_of_true_logit(z_grid, beta)
    (d1,) = torch.autograd.grad(loss.sum(), z_grid, create_graph=True)
    (d2,) = torch.autograd.grad(d1.sum(), z_grid)
    z_peak = z_grid[d2.argmax()].detach()
    p_peak = torch.sigmoid(z_peak - math.log(M - 1)).item()
    assert p_peak == pytest.approx(theory.inflection_point(beta), abs=1e-3)
    assert d2.max().item() == pytest.approx(0.25, abs=1e-6)  # the peak height is 1/4 for every beta


@pytest.mark.parametrize("beta", [*BETAS, 0.9, 1.1])
def test_local_lipschitz_bound_eq20(beta):
    p = torch.linspace(1e-4, 0.5, 50_001, dtype=torch.float64)
    _, _, d2, _ = z_derivatives(p, beta)
    assert d2.max().item() == pytest.approx(theory.local_lipschitz_bound(beta), rel=1e-6)
    expected = beta / (beta + 1) ** 2 if beta < 1 else 0.25
    assert theory.local_lipschitz_bound(beta) == pytest.approx(expected)


@pytest.mark.parametrize(("num_classes", "other", "tau"), [(2, 0.0, 1.0), (10, 1.5, 1.0), (100, -2.0, 0.7)])
@pytest.mark.parametrize("beta", [0.01, 1.0, 5.0])
def test_equal_logits_profile_fig7(num_classes, other, tau, beta):
    z = torch.linspace(-15, 25, 81, dtype=torch.float64).requires_grad_(True)
    loss = loss_of_true_logit(z, beta, num_classes=num_classes, other=other, tau=tau)
    (d1,) = torch.autograd.grad(loss.sum(), z)
    p_c, magnitude = theory.equal_logits_profile(z.detach(), num_classes, beta, other_logit=other, tau=tau)
    full = torch.cat([z.detach()[:, None], torch.full((81, num_classes - 1), other, dtype=torch.float64)], 1)
    torch.testing.assert_close(p_c, torch.softmax(full / tau, 1)[:, 0])
    torch.testing.assert_close(magnitude / tau, -d1)


def test_accepts_floats_numpy_and_tensors_alike():
    p = [0.2, 0.7]
    as_float = [theory.gradient_magnitude(x, 0.3) for x in p]
    np.testing.assert_allclose(theory.gradient_magnitude(np.array(p), 0.3), as_float)
    np.testing.assert_allclose(theory.gradient_magnitude(torch.tensor(p, dtype=torch.float64), 0.3).numpy(), as_float)
    np.testing.assert_allclose(theory.loss_value(np.array(p), 0.3), [theory.loss_value(x, 0.3) for x in p])


@pytest.mark.parametrize("bad", [0.0, -1.0, math.nan])
def test_bad_beta_and_probability(bad):
    with pytest.raises(ValueError, match="beta"):
        theory.inflection_point(bad)
    with pytest.raises(ValueError, match="p_c"):
        theory.gradient_magnitude(1.5, 1.0)
    with pytest.raises(ValueError, match="num_classes"):
        theory.equal_logits_profile([0.0], 1, 1.0)
