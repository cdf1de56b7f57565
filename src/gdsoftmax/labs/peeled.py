"""The layer-peeled model: last-layer features H as free variables, trained with a classifier W.

Logits are Z = H W^T for N = K * n samples in dimension d. Full-batch gradient descent on
the mean loss, with analytic gradients (checked against autograd in the tests):

* beta-softmax (beta = 1 is cross-entropy): dJ/dz = (p - e_y) / (tau (1 + (beta - 1) p_y)),
  the cross-entropy gradient rescaled per sample;
* ASM, the averaged-sample-margin loss as we read the abstract of "On the Dynamics under the
  Averaged Sample Margin Loss and Beyond": L = -(1/N) sum_i (z_iy - mean_{j != y} z_ij),
  linear in Z, so dL/dz_i = -a_i / N with a_i = e_y - (1 - e_y) / (K - 1).

Settings: *unconstrained*; *regularized* (adds lambda/2 (||W||^2 + ||H||^2 / N)); *spherical*
(after every step each feature is projected to norm r_H and each classifier row to r_W).
Each feature moves with the gradient of its own sample's loss (step lr * N on the mean loss),
the classifier with the mean loss (step lr).

>>> result = simulate(PeeledRun(loss="beta", beta=1.0, setting="spherical", steps=50))
>>> round(result["feature_norm"][-1], 6), result["step"][-1]  # on the unit sphere after 50 steps
(1.0, 50)
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from gdsoftmax.analysis.collapse import collapse_metrics
from gdsoftmax.loss import gradient_decay_loss

__all__ = ["SETTINGS", "PeeledRun", "asm_loss", "logit_gradient", "simulate"]

SETTINGS = ("unconstrained", "regularized", "spherical")
DIVERGED = 1e100  # ASM without constraints grows exponentially; stop before float64 overflows


def asm_loss(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Mean over samples of -(z_y - mean_{j != y} z_j); logits (N, K), target (N,)."""
    k = logits.shape[1]
    true = logits.gather(1, target[:, None]).squeeze(1)
    others = (logits.sum(1) - true) / (k - 1)
    return -(true - others).mean()


def logit_gradient(logits: torch.Tensor, target: torch.Tensor, loss: str, beta: float = 1.0,
                   tau: float = 1.0) -> torch.Tensor:
    """d(mean loss)/d logits, (N, K), in closed form."""
    n, k = logits.shape
    onehot = torch.nn.functional.one_hot(target, k).to(logits.dtype)
    if loss == "asm":
        return -(onehot - (1 - onehot) / (k - 1)) / n
    p = torch.softmax(logits / tau, dim=1)
    p_true = (p * onehot).sum(1, keepdim=True)
    return (p - onehot) / (tau * (1 + (beta - 1) * p_true)) / n


@dataclass
class PeeledRun:
    loss: str = "beta"  # "beta" (beta = 1 is CE) or "asm"
    beta: float = 1.0
    setting: str = "unconstrained"
    num_classes: int = 4
    per_class: int = 16
    dim: int = 8
    steps: int = 2000
    lr: float = 0.05
    tau: float = 1.0
    weight_decay: float = 5e-3
    radius_features: float = 1.0
    radius_classifier: float = 5.0
    init_scale: float = 0.1
    record_every: int = 20
    seed: int = 0


def _loss_value(logits, target, run: PeeledRun) -> float:
    if run.loss == "asm":
        return float(asm_loss(logits, target))
    return float(gradient_decay_loss(logits, target, run.beta, tau=run.tau))


def _project(rows: torch.Tensor, radius: float) -> torch.Tensor:
    return radius * rows / rows.norm(dim=1, keepdim=True).clamp_min(1e-300)


def simulate(run: PeeledRun) -> dict[str, list[float]]:
    """Gradient descent on (W, H); returns the tracked quantities every ``record_every`` steps."""
    if run.setting not in SETTINGS:
        raise ValueError(f"setting must be one of {SETTINGS}, got {run.setting!r}")
    if run.loss not in ("beta", "asm"):
        raise ValueError(f"loss must be 'beta' or 'asm', got {run.loss!r}")
    g = torch.Generator().manual_seed(run.seed)
    k, n = run.num_classes, run.num_classes * run.per_class
    target = torch.arange(k).repeat_interleave(run.per_class)  # (N,)
    features = run.init_scale * torch.randn(n, run.dim, generator=g, dtype=torch.float64)  # H (N, d)
    classifier = run.init_scale * torch.randn(k, run.dim, generator=g, dtype=torch.float64)  # W (K, d)
    if run.setting == "spherical":
        features, classifier = _project(features, run.radius_features), _project(classifier, run.radius_classifier)
    history: dict[str, list[float]] = {key: [] for key in ("step", "loss", "min_margin", "mean_margin", "nc1",
                                                           "nc2_features", "nc2_classifier", "nc3",
                                                           "feature_norm", "classifier_norm")}
    for step in range(run.steps + 1):
        logits = features @ classifier.T  # (N, K)
        if step % run.record_every == 0 or step == run.steps:
            true = logits.gather(1, target[:, None]).squeeze(1)
            margin = true - logits.scatter(1, target[:, None], -math.inf).amax(1)
            record = {"step": step, "loss": _loss_value(logits, target, run), "min_margin": float(margin.min()),
                      "mean_margin": float(margin.mean()), **collapse_metrics(features, target, classifier),
                      "feature_norm": float(features.norm(dim=1).mean()),
                      "classifier_norm": float(classifier.norm(dim=1).mean())}
            for key, value in record.items():
                history[key].append(value)
        if step == run.steps or float(features.abs().max()) > DIVERGED:
            break
        grad_logits = logit_gradient(logits, target, run.loss, run.beta, run.tau)  # (N, K)
        grad_classifier = grad_logits.T @ features  # (K, d)
        grad_features = grad_logits @ classifier * n  # (N, d): each feature's own sample loss
        if run.setting == "regularized":
            grad_classifier = grad_classifier + run.weight_decay * classifier
            grad_features = grad_features + run.weight_decay * features
        classifier, features = classifier - run.lr * grad_classifier, features - run.lr * grad_features
        if run.setting == "spherical":
            features, classifier = _project(features, run.radius_features), _project(classifier, run.radius_classifier)
    return history
