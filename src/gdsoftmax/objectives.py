"""What the trainer optimises, by name: the beta-softmax, a baseline loss on logits, or a margin head.

``loss.name`` in a config picks one; ``loss.options`` are its keyword options. Margin heads
(CosFace, ArcFace, A-Softmax, L-Softmax, Center loss) replace the model's classifier, so that
``model(x)`` still returns plain logits for evaluation, calibration and reports.

>>> import torch
>>> from gdsoftmax.models import build_model
>>> model = build_model("fcnn", (1, 8, 8), 10)
>>> objective = build_objective("cosface", {"s": 10.0}, model, beta=1.0, tau=1.0, label_smoothing=0.0)
>>> loss, logits = objective(model, torch.randn(4, 1, 8, 8), torch.tensor([0, 1, 2, 3]), step=0)
>>> logits.shape
torch.Size([4, 10])
"""

from __future__ import annotations

import inspect

from torch import nn

from gdsoftmax import losses
from gdsoftmax.heads import HEADS
from gdsoftmax.modules import GradientDecayLoss

__all__ = ["OBJECTIVES", "build_objective", "check_options"]

LOGIT_LOSSES = {
    "focal": losses.focal_loss,
    "flsd53": losses.flsd53_loss,
    "logitnorm": losses.logit_norm_loss,
    "label_smoothing": losses.label_smoothing_loss,
}
OBJECTIVES = ["gdsoftmax", *LOGIT_LOSSES, *HEADS]


def check_options(name: str, options: dict) -> None:
    """Raise ValueError naming an option the objective does not take."""
    if name not in OBJECTIVES:
        raise ValueError(f"unknown loss {name!r}; choose one of {OBJECTIVES}")
    if name == "gdsoftmax":
        if options:
            raise ValueError("the gdsoftmax loss takes beta, tau and label_smoothing from [loss], not options")
        return
    target = LOGIT_LOSSES.get(name) or HEADS[name].__init__
    skip = {"self", "logits", "target", "weight", "ignore_index", "reduction", "feature_dim", "num_classes"}
    accepted = [p for p in inspect.signature(target).parameters if p not in skip]
    for key in options:
        if key not in accepted:
            raise ValueError(f"{key!r} is not an option of the {name} loss; it takes {accepted}")


class _LogitObjective:
    def __init__(self, function):
        self.function = function

    def __call__(self, model, x, y, step):
        logits = model(x)  # (B, K)
        return self.function(logits, y), logits


class _BetaObjective:
    def __init__(self, beta_at, tau, label_smoothing):
        self.beta_at = beta_at
        self.criterion = GradientDecayLoss(beta_at(0), tau=tau, label_smoothing=label_smoothing)

    @property
    def beta(self) -> float:
        return self.criterion.beta

    def __call__(self, model, x, y, step):
        self.criterion.beta = self.beta_at(step)  # the schedule is a pure function of the step
        logits = model(x)
        return self.criterion(logits, y), logits


class _HeadObjective:
    def __init__(self, head):
        self.head = head

    def __call__(self, model, x, y, step):
        self.head.step = step
        logits, features = model(x, return_features=True)  # plain logits from the head, and its input
        return self.head.loss(features, y), logits


def build_objective(name: str, options: dict, model: nn.Module, *, beta, tau: float, label_smoothing: float):
    """The objective for ``name``; a head is installed as ``model.classifier`` (call before .to(device))."""
    check_options(name, options)
    if name == "gdsoftmax":
        from gdsoftmax.schedules import schedule_from_config

        return _BetaObjective(beta if callable(beta) else schedule_from_config(beta), tau, label_smoothing)
    if name in LOGIT_LOSSES:
        function = LOGIT_LOSSES[name]
        return _LogitObjective(lambda logits, y: function(logits, y, **options))
    old = model.classifier
    model.classifier = HEADS[name](old.in_features, old.out_features, **options)
    return _HeadObjective(model.classifier)
