"""Closed forms of the paper's gradient analysis (section 3), as functions of p_c and beta.

All functions accept Python floats, NumPy arrays or torch tensors and broadcast.
With tau = 1 and p_c the true-class softmax probability:

* loss            J(p_c)       = log(beta + (1 - p_c) / p_c)
* magnitude       G(p_c)       = -dJ/dz_c = (1 - p_c) / (1 + (beta - 1) p_c)
* eq. 12          dG/dp_c      = -beta / (1 + (beta - 1) p_c)^2
* eq. 13          d2G/dp_c2    = 2 beta (beta - 1) / (1 + (beta - 1) p_c)^3
* eq. 15          d2J/dz_c2    = beta p_c (1 - p_c) / (1 + (beta - 1) p_c)^2
* eq. 16          d3J/dz_c3    = beta p_c (1 - p_c) (1 - (beta + 1) p_c) / (1 + (beta - 1) p_c)^3
* inflection      p_c* = 1 / (1 + beta), where d3J/dz_c3 = 0 and d2J/dz_c2 peaks at 1/4
* eq. 20          max of d2J/dz_c2 on p_c in [0, 1/2]: beta/(beta+1)^2 if beta < 1, else 1/4

Derivatives with respect to z_c scale as 1/tau^k for the k-th derivative.

>>> from gdsoftmax.loss import theory
>>> theory.inflection_point(1.0)
0.5
>>> theory.gradient_magnitude(0.5, 1.0)
0.5
"""

from __future__ import annotations

import math

import numpy as np
import torch

from gdsoftmax.loss.validation import check_positive, is_real

__all__ = [
    "equal_logits_profile",
    "gradient_magnitude",
    "gradient_magnitude_dp",
    "gradient_magnitude_dp2",
    "inflection_point",
    "local_lipschitz_bound",
    "loss_dz2",
    "loss_dz3",
    "loss_value",
]


def _beta(beta):
    """Validate a scalar beta; arrays and tensors are checked elementwise."""
    if is_real(beta):
        return check_positive("beta", beta)
    if not bool((beta > 0).all()):
        raise ValueError("beta must be > 0 everywhere")
    return beta


def _p(p_c):
    if is_real(p_c):
        if not 0.0 <= p_c <= 1.0:
            raise ValueError(f"p_c is a probability and must lie in [0, 1], got {p_c!r}")
        return float(p_c)
    if not bool(((p_c >= 0) & (p_c <= 1)).all()):
        raise ValueError("p_c is a probability and must lie in [0, 1] everywhere")
    return p_c


def _scale(p_c, beta):
    """The row factor 1 + (beta - 1) p_c by which beta divides the CE gradient."""
    return 1 + (beta - 1) * p_c


def loss_value(p_c, beta):
    """J as a function of the true-class probability: log(beta + (1 - p_c) / p_c).

    >>> round(loss_value(0.5, 1.0), 6)  # log 2, plain cross-entropy at p_c = 1/2
    0.693147
    """
    p_c, beta = _p(p_c), _beta(beta)
    return _log(beta + (1 - p_c) / p_c)


def gradient_magnitude(p_c, beta):
    """G = (1 - p_c) / (1 + (beta - 1) p_c), the size of -dJ/dz_c at tau = 1.

    >>> round(gradient_magnitude(0.9, 0.01), 4)  # small beta: still large near p_c = 1
    0.9174
    """
    p_c, beta = _p(p_c), _beta(beta)
    return (1 - p_c) / _scale(p_c, beta)


def gradient_magnitude_dp(p_c, beta):
    """dG/dp_c = -beta / (1 + (beta - 1) p_c)^2 (eq. 12).

    >>> gradient_magnitude_dp(0.3, 1.0)
    -1.0
    """
    p_c, beta = _p(p_c), _beta(beta)
    return -beta / _scale(p_c, beta) ** 2


def gradient_magnitude_dp2(p_c, beta):
    """d2G/dp_c2 = 2 beta (beta - 1) / (1 + (beta - 1) p_c)^3 (eq. 13).

    >>> gradient_magnitude_dp2(0.3, 1.0)
    0.0
    """
    p_c, beta = _p(p_c), _beta(beta)
    return 2 * beta * (beta - 1) / _scale(p_c, beta) ** 3


def loss_dz2(p_c, beta, tau=1.0):
    """d2J/dz_c2 = beta p_c (1 - p_c) / (1 + (beta - 1) p_c)^2 / tau^2 (eq. 15).

    >>> loss_dz2(0.5, 1.0)
    0.25
    """
    p_c, beta, tau = _p(p_c), _beta(beta), check_positive("tau", tau)
    return beta * p_c * (1 - p_c) / _scale(p_c, beta) ** 2 / tau**2


def loss_dz3(p_c, beta, tau=1.0):
    """d3J/dz_c3 = beta p_c (1 - p_c) (1 - (beta + 1) p_c) / (1 + (beta - 1) p_c)^3 / tau^3 (eq. 16).

    >>> loss_dz3(0.5, 1.0)
    0.0
    """
    p_c, beta, tau = _p(p_c), _beta(beta), check_positive("tau", tau)
    return beta * p_c * (1 - p_c) * (1 - (beta + 1) * p_c) / _scale(p_c, beta) ** 3 / tau**3


def inflection_point(beta):
    """p_c = 1 / (1 + beta), where the gradient magnitude G(z_c) bends (d3J/dz_c3 = 0).

    Small beta pushes it towards p_c = 1: the gradient stays large until the sample is
    confidently right, which is the large-margin, easy-samples-first behaviour.

    >>> inflection_point(0.01)
    0.990099009900990...
    """
    return 1 / (1 + _beta(beta))


def local_lipschitz_bound(beta, p_max=0.5):
    """max of d2J/dz_c2 over p_c in [0, p_max] (eq. 20 uses p_max = 1/2).

    d2J/dz_c2 rises to its peak 1/4 at the inflection point 1/(1+beta) and falls after,
    so the maximum is at min(1/(1+beta), p_max). For p_max = 1/2 this is beta/(beta+1)^2
    when beta < 1 and 1/4 otherwise.

    >>> local_lipschitz_bound(1.0)
    0.25
    >>> round(local_lipschitz_bound(0.1), 6)  # 0.1 / 1.1^2
    0.082645
    """
    peak = inflection_point(beta)
    if isinstance(peak, float):
        p_star = min(peak, p_max)
    else:
        p_star = torch.clamp(peak, max=p_max) if torch.is_tensor(peak) else np.minimum(peak, p_max)
    return loss_dz2(p_star, beta)


def equal_logits_profile(z_c, num_classes, beta, *, other_logit=0.0, tau=1.0):
    """The Fig. 7 setting: m classes, all other logits equal, the true logit z_c swept.

    Returns ``(p_c, G)`` as float64 tensors, where p_c = 1 / (1 + (m - 1) e^{(other - z_c)/tau})
    and G = (1 - p_c) / (1 + (beta - 1) p_c) is the gradient magnitude (times 1/tau for the
    actual gradient on z_c).

    >>> p, g = equal_logits_profile([0.0], 2, 1.0)
    >>> p.item(), g.item()
    (0.5, 0.5)
    """
    if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 2:
        raise ValueError(f"num_classes must be an int >= 2, got {num_classes!r}")
    tau = check_positive("tau", tau)
    z_c = torch.as_tensor(z_c, dtype=torch.float64)
    # sigmoid form stays finite for any z_c
    p_c = torch.sigmoid((z_c - other_logit) / tau - math.log(num_classes - 1))
    return p_c, gradient_magnitude(p_c, beta)


def _log(value):
    if torch.is_tensor(value):
        return value.log()
    return math.log(value) if isinstance(value, float) else np.log(value)
