"""Adaptive beta: a PID controller on the calibration gap, in the spirit of the authors' follow-up
("A PID Controller Approach for Adaptive Probability-dependent Gradient Decay in Model Calibration").

Once per epoch the trainer measures the gap g = mean confidence - accuracy on the validation
split and calls ``update(g)``. With error e = g - target, the controller moves log(beta):

    log beta += kp * e + ki * sum(e) + kd * (e - e_previous),   then clamps beta to [min, max]

An over-confident model (g > 0) gets a larger beta, i.e. faster gradient decay. Between updates
``controller(step)`` returns the current beta, so a config names it like a schedule::

    beta = { kind = "pid", start = 1.0, kp = 2.0, ki = 0.2, kd = 0.0, min = 0.01, max = 100.0 }

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

from gdsoftmax.loss.validation import check_positive

__all__ = ["PIDController", "gradient_scale"]


@dataclass
class PIDController:
    start: float = 1.0
    kp: float = 2.0
    ki: float = 0.2
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
        self.state = {"beta": float(self.start), "integral": 0.0, "previous": 0.0, "updates": 0}

    def __call__(self, step: int) -> float:
        return self.state["beta"]

    def update(self, gap: float) -> float:
        """Feed the measured calibration gap (mean confidence - accuracy); returns the new beta."""
        error = gap - self.target
        s = self.state
        s["integral"] += error
        derivative = error - s["previous"] if s["updates"] else 0.0
        log_beta = math.log(s["beta"]) + self.kp * error + self.ki * s["integral"] + self.kd * derivative
        s["beta"] = min(self.max, max(self.min, math.exp(log_beta)))
        s["previous"], s["updates"] = error, s["updates"] + 1
        return s["beta"]

    def to_dict(self) -> dict:
        fields = {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name != "state"}
        return {"kind": self.kind, **fields}

    def state_dict(self) -> dict:
        return dict(self.state)

    def load_state_dict(self, state: dict) -> None:
        self.state = {k: float(v) if k != "updates" else int(v) for k, v in state.items()}


def gradient_scale(logits: torch.Tensor, labels: torch.Tensor, beta: float, tau: float = 1.0) -> float:
    """mean_i 1 / (1 + (beta - 1) p_i): how much beta shrinks (or grows) the CE gradient on average."""
    p = torch.softmax(logits.double() / tau, 1).gather(1, labels[:, None]).squeeze(1)
    return float((1 / (1 + (beta - 1) * p)).mean())
