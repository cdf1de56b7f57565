"""Adaptive beta: a PID controller on the calibration gap, in the spirit of the authors' follow-up
("A PID Controller Approach for Adaptive Probability-dependent Gradient Decay in Model Calibration",
Zhang & Xie, NeurIPS 2024), which sets beta once per epoch from a validation calibration error.

Once per epoch the trainer measures the gap g = mean confidence - accuracy on the validation
split and calls ``update(g)``. With error e = g - target, the controller moves log(beta) in the
textbook velocity form of a PID controller:

    log beta += kp * (e - e_prev) + ki * e + kd * (e - 2 e_prev + e_prev2),   then clamps beta to [min, max]

Summed over epochs this is the positional PID law log beta = log start + kp e + ki sum(e) + kd de,
but the state is the (clamped) output itself, so there is no integral to wind up while beta sits
at a clamp: it leaves the clamp as soon as the error changes sign. An over-confident model
(g > 0) gets a larger beta, i.e. faster gradient decay. Between updates ``controller(step)``
returns the current beta, so a config names it like a schedule::

    beta = { kind = "pid", start = 1.0, kp = 1.0, ki = 2.0, kd = 0.0, min = 0.01, max = 100.0 }

``lr_compensation = true`` asks the trainer to scale the learning rate by 1 / mean_i s_i with
s_i = 1 / (1 + (beta - 1) p_i) on the validation split: the average factor by which beta
rescales the cross-entropy gradient, so a change of beta does not also change the step size.

>>> pid = PIDController(start=1.0, kp=1.0, ki=0.0, kd=0.0)
>>> _ = pid.update(0.1)  # 10 points over-confident: beta grows by e^0.1
>>> round(pid(0), 4)
1.1052
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field

import torch

from gdsoftmax.loss.schedules import Schedule, schedule_from_config
from gdsoftmax.loss.validation import check_positive

__all__ = ["PIDController", "controller_from_table", "gradient_scale", "gradient_scale_of", "schedule_or_controller"]


@dataclass
class PIDController:
    start: float = 1.0
    kp: float = 1.0
    ki: float = 2.0
    kd: float = 0.0
    target: float = 0.0
    min: float = 0.01
    max: float = 100.0
    lr_compensation: bool = False
    kind = "pid"
    state: dict = field(default_factory=dict, compare=False, repr=False)

    def __post_init__(self):
        for name in ("start", "min", "max"):
            check_positive(name, getattr(self, name))
        if not self.min <= self.start <= self.max:
            raise ValueError(f"need min <= start <= max, got {self.min}, {self.start}, {self.max}")
        self.state = {"beta": float(self.start), "previous": 0.0, "previous2": 0.0, "updates": 0}

    def __call__(self, step: int) -> float:
        return self.state["beta"]

    def update(self, gap: float) -> float:
        """Feed the measured calibration gap (mean confidence - accuracy); returns the new beta."""
        error = gap - self.target
        s = self.state
        # the derivative term needs two earlier errors; before that it is left out (no kick at the start)
        second_difference = error - 2 * s["previous"] + s["previous2"] if s["updates"] >= 2 else 0.0
        step = self.kp * (error - s["previous"]) + self.ki * error + self.kd * second_difference
        s["beta"] = min(self.max, max(self.min, math.exp(math.log(s["beta"]) + step)))
        s["previous2"], s["previous"], s["updates"] = s["previous"], error, s["updates"] + 1
        return s["beta"]

    def to_dict(self) -> dict:
        fields = {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name != "state"}
        return {"kind": self.kind, **fields}

    def state_dict(self) -> dict:
        return dict(self.state)

    def load_state_dict(self, state: dict) -> None:
        known = {"beta": float(self.start), "previous": 0.0, "previous2": 0.0, "updates": 0}
        self.state = {k: (int if k == "updates" else float)(state.get(k, default)) for k, default in known.items()}


def controller_from_table(table: dict) -> PIDController:
    """The controller a config table names (``{"kind": "pid", "kp": ...}``); unknown keys are refused by name.

    >>> controller_from_table({"kind": "pid", "ki": 1.0}).ki
    1.0
    """
    options = {key: value for key, value in table.items() if key != "kind"}
    names = [f.name for f in dataclasses.fields(PIDController) if f.name != "state"]
    unknown = sorted(set(options) - set(names))
    if unknown:
        raise ValueError(f"unknown key(s) {unknown} for a 'pid' controller; it takes {names}")
    return PIDController(**options)


def gradient_scale_of(p_true: torch.Tensor, beta: float) -> float:
    """mean_i 1 / (1 + (beta - 1) p_i) over the true-class probabilities p_i: how much beta shrinks (or
    grows) the CE gradient on average; the lr compensation divides the learning rate by it.

    >>> gradient_scale_of(torch.tensor([0.5, 1.0], dtype=torch.float64), 3.0)  # (1/2 + 1/3) / 2
    0.41666666666666663
    """
    return float((1 / (1 + (beta - 1) * p_true.double())).mean())


def gradient_scale(logits: torch.Tensor, labels: torch.Tensor, beta: float, tau: float = 1.0) -> float:
    """:func:`gradient_scale_of` the softmax(z / tau) probabilities of the true labels."""
    p = torch.softmax(logits.double() / tau, 1).gather(1, labels[:, None]).squeeze(1)
    return gradient_scale_of(p, beta)


def schedule_or_controller(beta) -> Schedule | PIDController:
    """What drives β in a training loop's callback: a Schedule or PIDController as given, a ``{"kind": "pid"}``
    table as the controller, anything else (a number, a schedule table) as a schedule.

    >>> schedule_or_controller({"kind": "linear", "start": 0.1, "end": 1.0, "steps": 10})(5)
    0.55
    """
    if isinstance(beta, Schedule | PIDController):
        return beta
    if isinstance(beta, dict) and beta.get("kind") == "pid":
        return controller_from_table(beta)
    return schedule_from_config(beta)
