"""What beta does, in numbers: loss and gradient magnitude at a few confidences.

The loss values and gradients are computed by autograd through
:func:`gdsoftmax.loss.gradient_decay_loss` on 10-class logits in the paper's Fig. 7 setting
(all other logits equal), and checked against the closed forms in :mod:`gdsoftmax.loss.theory`.
"""

from __future__ import annotations

import math

import torch

from gdsoftmax.loss import gradient_decay_loss, theory

BETAS = (0.001, 0.01, 0.1, 1.0, 5.0, 50.0)
# the claims ledger's statuses the closing lines quote (docs/results/CLAIMS.md; a test holds them equal)
LEDGER = {"small-beta-margin": "confirmed", "small-beta-overconfidence": "confirmed", "large-beta-ece": "confirmed"}
CONFIDENCES = (0.1, 0.5, 0.9, 0.99)
NUM_CLASSES = 10


def loss_and_gradient(p_c: float, beta: float, num_classes: int = NUM_CLASSES) -> tuple[float, float]:
    """J and -dJ/dz_c for logits whose true-class softmax probability is ``p_c``."""
    z_c = math.log(p_c * (num_classes - 1) / (1 - p_c))  # others at 0: p_c = e^z / (e^z + m - 1)
    logits = torch.zeros(1, num_classes, dtype=torch.float64)
    logits[0, 0] = z_c
    logits.requires_grad_(True)
    loss = gradient_decay_loss(logits, torch.tensor([0]), beta)
    (grad,) = torch.autograd.grad(loss, logits)
    return loss.item(), -grad[0, 0].item()


def main() -> int:
    print(f"Gradient-decay softmax, {NUM_CLASSES} classes, tau = 1: the loss J and the gradient magnitude")
    print("G = -dJ/dz_c at several true-class probabilities p_c, by autograd through gradient_decay_loss.\n")
    columns = "".join(f"{p:>9g}" for p in CONFIDENCES)
    print(f"{'':>7}  {'inflection':>10}  {'Lipschitz':>9}  |{'loss J at p_c =':^36}|{'gradient G at p_c =':^36}")
    print(f"{'beta':>7}  {'1/(1+beta)':>10}  {'bound':>9}  |{columns}|{columns}")
    worst = 0.0
    for beta in BETAS:
        losses, grads = "", ""
        for p_c in CONFIDENCES:
            loss, grad = loss_and_gradient(p_c, beta)
            worst = max(worst, abs(loss - theory.loss_value(p_c, beta)),
                        abs(grad - theory.gradient_magnitude(p_c, beta)))
            losses += f"{loss:>9.4f}"
            grads += f"{grad:>9.4f}"
        print(f"{beta:>7g}  {theory.inflection_point(beta):>10.4f}  {theory.local_lipschitz_bound(beta):>9.4f}  "
              f"|{losses}|{grads}")
    print(f"\nautograd through the loss agrees with the closed forms to {worst:.1e}.")
    print("Small beta keeps G large until p_c is near 1; large beta lets G decay early. What that did in training,")
    print(f"by the claims ledger: larger margins ({LEDGER['small-beta-margin']}) and over-confidence "
          f"({LEDGER['small-beta-overconfidence']}) at small beta; a lower ECE at large beta where cross-entropy is "
          f"over-confident: {LEDGER['large-beta-ece']} (docs/results/CLAIMS.md).")
    return 0
