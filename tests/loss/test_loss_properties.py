"""Hypothesis properties of the loss, 500 examples each, float32."""

from __future__ import annotations

import math

import numpy as np
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from gdsoftmax import gradient_decay_loss

EXAMPLES = settings(max_examples=200, deadline=None)
betas = st.floats(min_value=math.log(1e-6), max_value=math.log(1e6)).map(math.exp)
taus = st.floats(min_value=0.1, max_value=10.0)


@st.composite
def problems(draw, max_abs=1e4):
    """Logits (N, C) with |z / tau| <= max_abs, class targets, beta and tau."""
    n = draw(st.integers(1, 6))
    c = draw(st.integers(1, 9))
    tau = draw(taus)
    scaled = draw(arrays(np.float32, (n, c), elements=st.floats(-max_abs, max_abs, width=32)))
    logits = torch.from_numpy(scaled) * tau
    target = torch.tensor(draw(st.lists(st.integers(0, c - 1), min_size=n, max_size=n)))
    return logits, target, draw(betas), tau


def loss_and_grad(logits, target, beta, tau, reduction="none"):
    x = logits.clone().requires_grad_(True)
    loss = gradient_decay_loss(x, target, beta, tau=tau, reduction=reduction)
    (grad,) = torch.autograd.grad(loss.sum(), x)
    return loss.detach(), grad


def float32_tolerance(logits, tau):
    return 8 * (1e-6 + 1.2e-7 * logits.abs().max().item() / tau)


@EXAMPLES
@given(problems())
def test_finite_for_logits_up_to_1e4(problem):
    loss, grad = loss_and_grad(*problem)
    assert torch.isfinite(loss).all()
    assert torch.isfinite(grad).all()


@EXAMPLES
@given(problems(max_abs=1e3), st.floats(-1e3, 1e3))
def test_shift_invariance(problem, shift):
    logits, target, beta, tau = problem
    loss, grad = loss_and_grad(logits, target, beta, tau)
    shifted_logits = logits + shift * tau
    loss_shifted, grad_shifted = loss_and_grad(shifted_logits, target, beta, tau)
    # the only error is the rounding of z + shift in float32
    atol = float32_tolerance(shifted_logits, tau) + float32_tolerance(logits, tau)
    torch.testing.assert_close(loss_shifted, loss, rtol=0, atol=atol)
    torch.testing.assert_close(grad_shifted, grad, rtol=1e-4, atol=atol / tau)
    torch.testing.assert_close(grad.sum(1), torch.zeros(len(grad)), rtol=0, atol=1e-6 / tau)


@EXAMPLES
@given(problems(), betas, betas)
def test_loss_increases_with_beta(problem, beta_a, beta_b):
    logits, target, _, tau = problem
    low, high = sorted((beta_a, beta_b))
    loss_low, _ = loss_and_grad(logits, target, low, tau)
    loss_high, _ = loss_and_grad(logits, target, high, tau)
    assert (loss_high >= loss_low - float32_tolerance(logits, tau)).all()


@EXAMPLES
@given(problems(max_abs=1e3))
def test_temperature_is_a_logit_scale(problem):
    logits, target, beta, tau = problem
    loss_tau, grad_tau = loss_and_grad(logits, target, beta, tau)
    loss_scaled, grad_scaled = loss_and_grad(logits / tau, target, beta, 1.0)
    atol = 2 * float32_tolerance(logits, tau)
    torch.testing.assert_close(loss_tau, loss_scaled, rtol=0, atol=atol)
    torch.testing.assert_close(grad_tau, grad_scaled / tau, rtol=1e-4, atol=1e-6 / tau)


@EXAMPLES
@given(problems())
def test_gradient_l1_norm_at_most_two_over_tau(problem):
    logits, target, beta, tau = problem
    _, grad = loss_and_grad(logits, target, beta, tau)
    assert (grad.abs().sum(1) <= 2 / tau * (1 + 1e-5)).all()
