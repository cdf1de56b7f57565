"""Beta schedules: pure functions of the training step.

A schedule holds no counter; the training loop passes the step in::

    >>> from gdsoftmax.loss.schedules import Linear, schedule_from_config
    >>> warmup = Linear(start=0.001, end=0.01, steps=1000)   # arXiv v1's MNIST range, the paper's linear form
    >>> [round(warmup(t), 6) for t in (0, 500, 1000, 5000)]
    [0.001, 0.0055, 0.01, 0.01]
    >>> schedule_from_config(warmup.to_dict()) == warmup     # round-trips through a TOML table
    True
    >>> schedule_from_config(0.5)                            # a bare number is a constant
    Constant(value=0.5)

Every shape goes from ``start`` to ``end`` over ``steps`` and then holds ``end``; warm-ups
may go up or down. All values must be finite and > 0, because beta must be.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

from gdsoftmax.loss.validation import check_positive, is_real

__all__ = ["Constant", "Cosine", "Exponential", "Linear", "Schedule", "Step", "describe_beta", "schedule_from_config"]


def _check_step(step: int) -> int:
    if isinstance(step, bool) or not isinstance(step, int) or step < 0:
        raise ValueError(f"step must be an int >= 0, got {step!r}")
    return step


def _check_steps(steps: object) -> None:
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
        raise ValueError(f"steps must be an int >= 1, got {steps!r}")


@dataclass(frozen=True)
class Schedule:
    """Base class: ``schedule(step) -> beta`` and ``to_dict()`` for configs."""

    kind = "schedule"

    def __call__(self, step: int) -> float:
        raise NotImplementedError

    def to_dict(self) -> dict:
        """A plain dict (a TOML table) that :func:`schedule_from_config` turns back into this schedule."""
        fields = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        fields = {k: list(val) if isinstance(val, tuple) else val for k, val in fields.items()}
        return {"kind": self.kind, **fields}


@dataclass(frozen=True)
class Constant(Schedule):
    """beta(t) = value."""

    value: float
    kind = "constant"

    def __post_init__(self):
        object.__setattr__(self, "value", check_positive("value", self.value))

    def __call__(self, step: int) -> float:
        _check_step(step)
        return self.value


@dataclass(frozen=True)
class _Ramp(Schedule):
    """Shared fields and checks of the shapes that go from start to end over steps."""

    start: float
    end: float
    steps: int

    def __post_init__(self):
        object.__setattr__(self, "start", check_positive("start", self.start))
        object.__setattr__(self, "end", check_positive("end", self.end))
        _check_steps(self.steps)

    def __call__(self, step: int) -> float:
        if _check_step(step) >= self.steps:
            return self.end  # held exactly, not end plus rounding
        return self._interpolate(step / self.steps)

    def _interpolate(self, fraction: float) -> float:
        raise NotImplementedError


@dataclass(frozen=True)
class Linear(_Ramp):
    """The paper's warm-up: beta(t) = (end - start) / steps * t + start, held at end after."""

    kind = "linear"

    def _interpolate(self, fraction: float) -> float:
        return self.start + (self.end - self.start) * fraction


@dataclass(frozen=True)
class Cosine(_Ramp):
    """Half a cosine from start to end: flat at both ends, steepest in the middle."""

    kind = "cosine"

    def _interpolate(self, fraction: float) -> float:
        return self.end + (self.start - self.end) * 0.5 * (1.0 + math.cos(math.pi * fraction))


@dataclass(frozen=True)
class Exponential(_Ramp):
    """Geometric interpolation: beta(t) = start * (end / start) ** (t / steps).

    Natural for beta, whose effect is on a log scale (the paper sweeps 0.001 ... 50).
    """

    kind = "exponential"

    def _interpolate(self, fraction: float) -> float:
        return self.start * (self.end / self.start) ** fraction


@dataclass(frozen=True)
class Step(Schedule):
    """beta(t) = start * gamma ** (number of milestones <= t)."""

    start: float
    gamma: float
    milestones: tuple[int, ...]
    kind = "step"

    def __post_init__(self):
        object.__setattr__(self, "start", check_positive("start", self.start))
        object.__setattr__(self, "gamma", check_positive("gamma", self.gamma))
        milestones = tuple(self.milestones)
        if any(isinstance(m, bool) or not isinstance(m, int) or m < 0 for m in milestones):
            raise ValueError(f"milestones must be ints >= 0, got {list(milestones)}")
        if list(milestones) != sorted(milestones):
            raise ValueError(f"milestones must be in increasing order, got {list(milestones)}")
        object.__setattr__(self, "milestones", milestones)

    def __call__(self, step: int) -> float:
        _check_step(step)
        return self.start * self.gamma ** sum(m <= step for m in self.milestones)


_KINDS = {cls.kind: cls for cls in (Constant, Linear, Cosine, Exponential, Step)}


def schedule_from_config(config: float | int | dict | Schedule) -> Schedule:
    """Build a schedule from a number (constant) or a table ``{kind = "linear", ...}``.

    Unknown kinds and unknown or missing keys raise ValueError naming them.

    >>> schedule_from_config({"kind": "step", "start": 1.0, "gamma": 0.1, "milestones": [10]})(10)
    0.1
    """
    if isinstance(config, Schedule):
        return config
    if is_real(config):
        return Constant(config)
    if not isinstance(config, dict):
        raise ValueError(f"a beta schedule is a number or a table with a 'kind' key, got {config!r}")
    config = dict(config)
    kind = config.pop("kind", None)
    if not isinstance(kind, str) or kind not in _KINDS:
        raise ValueError(f"unknown schedule kind {kind!r}; choose one of {sorted(_KINDS)}")
    cls = _KINDS[kind]
    names = [f.name for f in dataclasses.fields(cls)]
    unknown = sorted(set(config) - set(names))
    if unknown:
        raise ValueError(f"unknown key(s) {unknown} for a {kind!r} schedule; it takes {names}")
    missing = [n for n in names if n not in config]
    if missing:
        raise ValueError(f"a {kind!r} schedule needs the key(s) {missing}")
    return cls(**config)


def describe_beta(beta: float | int | dict, run_epochs: float | None = None, *, symbol: bool = True,
                  detail: bool = False) -> str:
    """β in words: the one description that report tables, legends, trackers and the paper's columns use.

    ``beta`` is a number or a config's table (a schedule, a warm-up in ``epochs`` or ``steps``, the ``pid``
    controller). A warm-up names its length unless it spans the whole run (``run_epochs``), so two warm-ups
    that differ only in length never share a label. ``symbol=False`` leaves out the "β": the paper's column
    heads and the trackers' parameters. ``detail=True`` names the controller's start and gains and the other
    schedules' parameters, where a tracker shows one run.

    >>> describe_beta(0.1), describe_beta(5.0, symbol=False)
    ('β = 0.1', '5')
    >>> warm = {"kind": "linear", "start": 0.01, "end": 0.1, "epochs": 50}
    >>> describe_beta(warm, run_epochs=50), describe_beta(warm, run_epochs=100)
    ('β linear 0.01→0.1', 'β linear 0.01→0.1 over 50 epochs')
    >>> describe_beta({"kind": "pid", "start": 1.0, "kp": 1.0, "ki": 2.0}, symbol=False, detail=True)
    'pid from 1 (kp 1, ki 2)'
    """
    if not isinstance(beta, dict):
        value = f"{float(beta):g}"
        return f"β = {value}" if symbol else value
    kind = str(beta.get("kind", "?"))
    if kind == "pid":
        gains = ", ".join(f"{k} {beta[k]:g}" for k in ("kp", "ki", "kd") if beta.get(k))
        text = f"pid from {beta.get('start', 1.0):g}" + (f" ({gains})" if gains else "") if detail else "pid"
    elif "end" in beta:
        text = f"{kind} {beta['start']:g}→{beta['end']:g}"
        if "epochs" in beta and beta["epochs"] != run_epochs:
            text += f" over {beta['epochs']:g} epochs"
        elif "epochs" not in beta:
            text += f" over {beta.get('steps', '?')} steps"
    else:
        text = kind + ("".join(f" {k} {v}" for k, v in beta.items() if k != "kind") if detail else "")
    return f"β {text}" if symbol else text
