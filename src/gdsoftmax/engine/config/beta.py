"""``loss.beta`` of a config, parsed once: a number, a schedule table, or the adaptive controller.

A config writes beta as a number (``beta = 0.1``), a schedule table
(``beta = {kind = "linear", start = 0.01, end = 0.1, epochs = 10}``; a ramp may give ``epochs``
instead of ``steps``) or the PID controller of :mod:`gdsoftmax.loss.adaptive`
(``beta = {kind = "pid", ...}``). :class:`BetaSetting` validates it when the config is parsed and
answers every question the engine and the reports ask of it.

>>> BetaSetting(0.1).constant, BetaSetting(0.1).describe()
(0.1, 'β = 0.1')
>>> warmup = BetaSetting({"kind": "linear", "start": 0.01, "end": 0.1, "epochs": 2})
>>> warmup.is_warmup, warmup.schedule(steps_per_epoch=5)(10), warmup.describe(run_epochs=2)
(True, 0.1, 'β linear 0.01→0.1')
"""

from __future__ import annotations

import copy
import json

from gdsoftmax.loss.adaptive import PIDController, controller_from_table
from gdsoftmax.loss.schedules import Schedule, describe_beta, schedule_from_config
from gdsoftmax.loss.validation import is_real

__all__ = ["BetaSetting"]


class BetaSetting:
    """A validated ``loss.beta``; ``raw`` is the value as the config writes it."""

    def __init__(self, raw: float | int | dict):
        if not (is_real(raw) or isinstance(raw, dict)):
            raise ValueError(f"beta is a number or a table with a 'kind' key, got {raw!r}")
        self.raw = float(raw) if is_real(raw) else copy.deepcopy(raw)  # np.float32 too, written as a TOML float
        self.schedule(steps_per_epoch=1)  # raises ValueError naming what is wrong
        if isinstance(self.raw, dict) and self.raw.get("kind") == "constant" and set(self.raw) == {"kind", "value"}:
            self.raw = float(self.raw["value"])  # one spelling per run: {kind = "constant", value = 0.1} is 0.1

    @property
    def kind(self) -> str:
        return "constant" if isinstance(self.raw, float) else str(self.raw.get("kind"))

    @property
    def constant(self) -> float | None:
        """The value of a plain number; None for schedules and the controller."""
        return self.raw if isinstance(self.raw, float) else None

    @property
    def is_adaptive(self) -> bool:
        return self.kind == "pid"

    @property
    def is_warmup(self) -> bool:
        """A ramp from ``start`` to ``end`` (linear, cosine, exponential)."""
        return isinstance(self.raw, dict) and "end" in self.raw and not self.is_adaptive

    def schedule(self, steps_per_epoch: int) -> Schedule | PIDController:
        """A fresh schedule (a pure function of the step) or controller for a run."""
        if self.is_adaptive:
            return controller_from_table(self.raw)
        table = self.raw
        if isinstance(table, dict) and "epochs" in table:
            table = dict(table)
            epochs = table.pop("epochs")
            if "steps" in table:
                raise ValueError("give either steps or epochs, not both")
            if isinstance(epochs, bool) or not isinstance(epochs, int | float) or epochs <= 0:
                raise ValueError(f"epochs must be > 0, got {epochs!r}")
            table["steps"] = max(1, round(epochs * steps_per_epoch))
        return schedule_from_config(table)

    def unfinished_warmup(self, epochs: int, steps_per_epoch: int) -> str | None:
        """Why a run of ``epochs`` epochs of ``steps_per_epoch`` steps cannot finish this warm-up (its label would
        name an end β that no step used), or None when it can (or β is no ramp).

        >>> BetaSetting({"kind": "linear", "start": 0.01, "end": 0.1, "epochs": 100}).unfinished_warmup(5, 10)
        'the linear warm-up 0.01→0.1 lasts 100 epochs but the run trains 5, so β would stop at 0.0144'
        """
        if not self.is_warmup:
            return None
        schedule = self.schedule(steps_per_epoch)
        total = epochs * steps_per_epoch
        if schedule.steps <= total:
            return None
        length = f"{self.raw['epochs']:g} epochs" if "epochs" in self.raw else f"{schedule.steps} steps"
        trained = f"{epochs}" if "epochs" in self.raw else f"{total} steps"
        return (f"the {self.kind} warm-up {self.raw['start']:g}→{self.raw['end']:g} lasts {length} but the run trains "
                f"{trained}, so β would stop at {schedule(total - 1):.3g}")

    def describe(self, run_epochs: int | None = None, *, symbol: bool = True) -> str:
        """A label for tables and legends: "β = 0.1", "β linear 0.01→0.1", "β pid"
        (:func:`gdsoftmax.loss.schedules.describe_beta`).

        >>> warm = BetaSetting({"kind": "linear", "start": 0.01, "end": 0.1, "epochs": 50})
        >>> warm.describe(run_epochs=50), warm.describe(run_epochs=100)
        ('β linear 0.01→0.1', 'β linear 0.01→0.1 over 50 epochs')
        """
        return describe_beta(self.raw, run_epochs, symbol=symbol)

    def __eq__(self, other) -> bool:
        other_raw = other.raw if isinstance(other, BetaSetting) else other
        return self.raw == other_raw

    def __hash__(self) -> int:
        return hash(json.dumps(self.raw, sort_keys=True))

    def __repr__(self) -> str:
        return f"BetaSetting({self.raw!r})"
