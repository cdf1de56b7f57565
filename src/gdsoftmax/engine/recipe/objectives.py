"""What a run optimises, by name: the β-loss, a baseline loss on logits, or a margin head.

``loss.name`` in a config picks one; ``loss.options`` are its keyword options. Margin heads
(CosFace, ArcFace, A-Softmax, L-Softmax, Center loss) replace the model's classifier, so that
``model(x)`` still returns plain logits for evaluation, calibration and reports.

Every objective has one interface, which the training loop uses and nothing else:

* ``objective(model, x, y, step) -> (loss, logits)``: the loss of one step;
* ``beta_at(step)``: the β used at that step (None for losses without one);
* ``end_of_epoch(val, val_logits, val_labels)``: called once per epoch with the validation
  metrics; adaptive β moves its controller here;
* ``lr_factor``: the factor the loop applies to the learning rate (adaptive β's compensation);
* ``state_dict()`` / ``load_state_dict()``: what a checkpoint keeps of it.

>>> import torch
>>> from gdsoftmax.engine.models.registry import build_model
>>> model = build_model("fcnn", (1, 8, 8), 10)
>>> objective = build_objective("cosface", {"s": 10.0}, model, beta=None, tau=1.0, label_smoothing=0.0)
>>> loss, logits = objective(model, torch.randn(4, 1, 8, 8), torch.tensor([0, 1, 2, 3]), step=0)
>>> logits.shape, objective.beta_at(0)
(torch.Size([4, 10]), None)
"""

from __future__ import annotations

import inspect

from torch import nn

from gdsoftmax.baselines import HEADS, LOGIT_LOSSES
from gdsoftmax.loss import GradientDecayLoss
from gdsoftmax.loss.adaptive import PIDController, gradient_scale
from gdsoftmax.loss.literal import shifted_exp_loss

__all__ = ["OBJECTIVES", "Objective", "build_objective", "check_options"]

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


class Objective:
    """The interface, with the defaults of an objective that has no β and no state."""

    lr_factor = 1.0

    def __call__(self, model: nn.Module, x, y, step: int):
        raise NotImplementedError

    def beta_at(self, step: int) -> float | None:
        return None

    def end_of_epoch(self, val: dict, val_logits, val_labels) -> None:
        """Called after each epoch's evaluation with the validation metrics (acc, ce, conf)."""

    def state_dict(self) -> dict:
        return {"lr_factor": self.lr_factor, "controller": {}}

    def load_state_dict(self, state: dict) -> None:
        pass


class _LogitObjective(Objective):
    def __init__(self, function, options: dict):
        self.function, self.options = function, options

    def __call__(self, model, x, y, step):
        logits = model(x)  # (B, K)
        return self.function(logits, y, **self.options), logits


class _BetaObjective(Objective):
    def __init__(self, schedule, tau: float, label_smoothing: float, backend: str):
        self.schedule = schedule  # a pure function of the step
        self.criterion = GradientDecayLoss(schedule(0), tau=tau, label_smoothing=label_smoothing, backend=backend)

    def beta_at(self, step: int) -> float:
        return self.schedule(step)

    def __call__(self, model, x, y, step):
        self.criterion.beta = self.schedule(step)
        logits = model(x)
        return self.criterion(logits, y), logits


class _LiteralBetaObjective(_BetaObjective):
    """The paper's Eq. 25 taken literally (``loss.numerics = "paper-u70"``; gdsoftmax.loss.literal)."""

    def __init__(self, schedule, tau: float):
        self.schedule, self.tau = schedule, tau

    def __call__(self, model, x, y, step):
        logits = model(x)  # (B, K)
        return shifted_exp_loss(logits, y, self.schedule(step), self.tau), logits


class _AdaptiveBetaObjective(_BetaObjective):
    """β from a PID controller, moved once per epoch on the validation calibration gap."""

    def __init__(self, controller: PIDController, tau: float, label_smoothing: float, backend: str):
        super().__init__(controller, tau, label_smoothing, backend)
        self.controller, self.tau, self.lr_factor = controller, tau, 1.0

    def end_of_epoch(self, val, val_logits, val_labels) -> None:
        self.controller.update(val["conf"] - val["acc"])
        if self.controller.lr_compensation:
            self.lr_factor = 1.0 / gradient_scale(val_logits, val_labels, self.controller(0), self.tau)

    def state_dict(self) -> dict:
        return {"lr_factor": self.lr_factor, "controller": self.controller.state_dict()}

    def load_state_dict(self, state: dict) -> None:
        self.lr_factor = float(state.get("lr_factor", 1.0))
        self.controller.load_state_dict(state["controller"])


class _HeadObjective(Objective):
    def __init__(self, head):
        self.head = head

    def __call__(self, model, x, y, step):
        self.head.step = step
        logits, features = model(x, return_features=True)  # plain logits from the head, and its input
        return self.head.loss(features, y), logits


def build_objective(name: str, options: dict, model: nn.Module, *, beta, tau: float, label_smoothing: float,
                    backend: str = "auto", numerics: str = "stable") -> Objective:
    """The objective for ``name``; ``beta`` is a schedule or controller (``BetaSetting.schedule``).
    A head is installed as ``model.classifier`` (call before ``.to(device)``). ``numerics="paper-u70"``
    computes the β-loss as the paper's Eq. 25 literally (a reproduction option)."""
    check_options(name, options)
    if numerics != "stable":
        if name != "gdsoftmax" or isinstance(beta, PIDController) or label_smoothing:
            raise ValueError(f"numerics={numerics!r} is the plain gdsoftmax loss of Eq. 25: no baseline, "
                             "no adaptive beta, no label smoothing")
        return _LiteralBetaObjective(beta, tau)
    if name == "gdsoftmax":
        if isinstance(beta, PIDController):
            return _AdaptiveBetaObjective(beta, tau, label_smoothing, backend)
        return _BetaObjective(beta, tau, label_smoothing, backend)
    if name in LOGIT_LOSSES:
        return _LogitObjective(LOGIT_LOSSES[name], options)
    old = model.classifier
    model.classifier = HEADS[name](old.in_features, old.out_features, **options)
    return _HeadObjective(model.classifier)
