"""The paper's section 3 checked on our implementation of the loss, in float64: each statement is
measured with autograd through :func:`gdsoftmax.loss.gradient_decay_loss` on a grid of p_c and β,
never through the closed forms it states, so a wrong statement (or a wrong kernel) shows.

Logits ``[logit(p), 0]`` over two classes put the true-class probability exactly at p; the
derivatives in z_c are those of any class count with the other logits held (∂p_c/∂z_c = p_c(1 − p_c)).

>>> check = run_check("inflection_point")
>>> check.holds, check.claim
(True, 'inflection-point')
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from gdsoftmax.loss import gradient_decay_loss

__all__ = ["CHECKS", "TheoryCheck", "run_check"]

BETAS = (0.001, 0.01, 0.1, 0.5, 2.0, 10.0, 50.0)
TOLERANCE = 1e-9


@dataclass(frozen=True)
class TheoryCheck:
    claim: str  # the registered claim id
    holds: bool
    detail: str  # what was measured, in one line


def _derivatives(p: torch.Tensor, beta: float) -> tuple[torch.Tensor, torch.Tensor]:
    """(G = −∂J/∂z_c, ∂²J/∂z_c²) at true-class probabilities ``p`` by autograd, float64."""
    z_c = torch.log(p / (1 - p)).requires_grad_(True)
    logits = torch.stack([z_c, torch.zeros_like(z_c)], dim=1)
    loss = gradient_decay_loss(logits, torch.zeros(len(p), dtype=torch.long), beta=beta, reduction="sum")
    (first,) = torch.autograd.grad(loss, z_c, create_graph=True)
    (second,) = torch.autograd.grad(first.sum(), z_c)
    return -first.detach(), second


def _grid(low: float = 1e-4, high: float = 1 - 1e-4, n: int = 20001) -> torch.Tensor:
    return torch.linspace(low, high, n, dtype=torch.float64)


def _within(value: float, tolerance: float) -> str:
    """A rounding error as the bound it meets, not its digits: those differ between CPUs (an AVX-512 and an
    AVX2 machine disagree in the last bits), and the ledger prints this text.

    >>> _within(6.9e-15, 1e-12), _within(2e-12, 1e-12)
    ('< 1e-12', '2.0e-12 (over the tolerance 1e-12)')
    """
    return f"< {tolerance:.0e}" if value < tolerance else f"{value:.1e} (over the tolerance {tolerance:.0e})"


def _gradient_form() -> tuple[bool, str]:
    generator = torch.Generator().manual_seed(0)
    logits = (3 * torch.randn(256, 10, generator=generator, dtype=torch.float64))
    target = torch.randint(10, (256,), generator=generator)
    worst = 0.0
    for beta in BETAS:
        x = logits.clone().requires_grad_(True)
        (grad,) = torch.autograd.grad(gradient_decay_loss(x, target, beta=beta, reduction="sum"), x)
        y = logits.clone().requires_grad_(True)
        (ce,) = torch.autograd.grad(torch.nn.functional.cross_entropy(y, target, reduction="sum"), y)
        p_c = torch.softmax(logits, 1).gather(1, target[:, None])
        worst = max(worst, float((grad - ce / (1 + (beta - 1) * p_c)).abs().max()))
    return worst < TOLERANCE, f"autograd gradient vs CE's / (1 + (β − 1) p_c): largest absolute error " \
                              f"{_within(worst, TOLERANCE)} over 256 × 10 logits and β ∈ {list(BETAS)}"


def _decay_shape() -> tuple[bool, str]:
    p = _grid(0.01, 0.99, 981)
    wrong = []
    for beta in BETAS:
        g, _ = _derivatives(p, beta)
        curvature = g[2:] - 2 * g[1:-1] + g[:-2]  # the sign of ∂²G/∂p_c² on an even grid
        expected = 1 if beta > 1 else -1
        if not bool((torch.sign(curvature) == expected).all()):
            wrong.append(beta)
    return not wrong, ("second differences of G in p_c have the sign of β − 1 at every grid point, β ∈ "
                       f"{list(BETAS)}" if not wrong else f"wrong sign somewhere for β = {wrong}")


def _inflection_point() -> tuple[bool, str]:
    p = _grid()
    worst_p, worst_peak = 0.0, 0.0
    for beta in BETAS:
        _, curvature = _derivatives(p, beta)
        at = int(curvature.argmax())
        worst_p = max(worst_p, abs(float(p[at]) - 1 / (1 + beta)))
        worst_peak = max(worst_peak, abs(float(curvature[at]) - 0.25))
    holds = worst_p < 1e-3 and worst_peak < 1e-6
    return holds, (f"argmax of ∂²J/∂z_c² off 1/(1 + β) by {_within(worst_p, 1e-3)}, peak off 1/4 by "
                   f"{_within(worst_peak, 1e-6)} "
                   f"(p_c grid step 5e-5, β ∈ {list(BETAS)})")


def _local_lipschitz() -> tuple[bool, str]:
    p = _grid(1e-4, 0.5)
    worst = 0.0
    for beta in BETAS:
        _, curvature = _derivatives(p, beta)
        bound = beta / (beta + 1) ** 2 if beta < 1 else 0.25
        worst = max(worst, abs(float(curvature.max()) - bound))
    return worst < 1e-6, (f"max of ∂²J/∂z_c² on p_c ∈ [0, 1/2] vs eq. 23's bound: largest absolute error "
                          f"{_within(worst, 1e-6)}")


def _gradient_limits() -> tuple[bool, str]:
    p = _grid(0.01, 0.99, 99)
    small, _ = _derivatives(p, 1e-9)
    large, _ = _derivatives(p, 1e9)
    gap_small, gap_large = float((small - 1).abs().max()), float(large.abs().max())
    return gap_small < 1e-6 and gap_large < 1e-6, (f"p_c ∈ [0.01, 0.99]: G off 1 by {_within(gap_small, 1e-6)} "
                                                   f"at β = 1e-9, G {_within(gap_large, 1e-6)} at β = 1e9")


def _magnitude_order() -> tuple[bool, str]:
    p = _grid(0.01, 0.99, 99)
    magnitudes = torch.stack([_derivatives(p, beta)[0] for beta in BETAS])  # rows in rising β
    holds = bool((magnitudes[:-1] > magnitudes[1:]).all())
    return holds, f"G falls with β at every p_c ∈ [0.01, 0.99] for β ∈ {list(BETAS)}"


CHECKS = {"gradient_form": ("gradient-form", _gradient_form), "decay_shape": ("decay-shape", _decay_shape),
          "inflection_point": ("inflection-point", _inflection_point),
          "local_lipschitz": ("local-lipschitz", _local_lipschitz),
          "gradient_limits": ("gradient-limits", _gradient_limits),
          "magnitude_order": ("smaller-beta-larger-gradient", _magnitude_order)}


def run_check(name: str) -> TheoryCheck:
    """Run one named check (a key of CHECKS) and say whether the paper's statement holds."""
    if name not in CHECKS:
        raise KeyError(f"no theory check {name!r}; known: {', '.join(CHECKS)}")
    claim, check = CHECKS[name]
    holds, detail = check()
    return TheoryCheck(claim, holds, detail)
