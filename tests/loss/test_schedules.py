"""Beta schedules: pure functions of the step that round-trip through TOML tables."""

from __future__ import annotations

import math
import tomllib

import pytest

from gdsoftmax.loss.schedules import Constant, Cosine, Exponential, Linear, Step, schedule_from_config

SCHEDULES = [
    Constant(0.5),
    Linear(0.001, 0.01, 100),
    Linear(5.0, 1.0, 10),  # a warm-up may go down
    Cosine(0.01, 0.1, 50),
    Exponential(0.001, 1.0, 30),
    Step(1.0, 0.5, (10, 20)),
]


def test_linear_is_the_papers_warmup():
    schedule = Linear(start=0.001, end=0.01, steps=1000)
    for t in [0, 1, 250, 999, 1000]:
        assert schedule(t) == pytest.approx((0.01 - 0.001) / 1000 * t + 0.001)
    assert schedule(1001) == schedule(10**9) == 0.01


def test_shapes_start_and_end_where_told():
    for schedule in (Linear(2.0, 8.0, 40), Cosine(2.0, 8.0, 40), Exponential(2.0, 8.0, 40)):
        assert schedule(0) == pytest.approx(2.0)
        assert schedule(40) == pytest.approx(8.0)
        assert schedule(400) == pytest.approx(8.0)
    assert Cosine(2.0, 8.0, 40)(20) == pytest.approx(5.0)
    assert Exponential(2.0, 8.0, 40)(20) == pytest.approx(4.0)  # the geometric middle
    assert [Step(1.0, 0.1, (2, 4))(t) for t in range(6)] == pytest.approx([1, 1, 0.1, 0.1, 0.01, 0.01])


@pytest.mark.parametrize("schedule", SCHEDULES, ids=repr)
def test_pure_function_of_step(schedule):
    forwards = [schedule(t) for t in range(0, 120, 7)]
    backwards = [schedule(t) for t in reversed(range(0, 120, 7))]
    assert forwards == backwards[::-1]
    assert all(math.isfinite(b) and b > 0 for b in forwards)


@pytest.mark.parametrize("schedule", SCHEDULES, ids=repr)
def test_round_trip_through_dict_and_toml(schedule):
    assert schedule_from_config(schedule.to_dict()) == schedule
    table = schedule.to_dict()
    toml = "beta = { " + ", ".join(f"{k} = {v!r}" if not isinstance(v, str) else f'{k} = "{v}"'
                                   for k, v in table.items()) + " }"
    assert schedule_from_config(tomllib.loads(toml)["beta"]) == schedule


def test_number_is_constant():
    assert schedule_from_config(2) == Constant(2.0)


@pytest.mark.parametrize(("config", "message"), [
    ({"kind": "linear", "start": 0.1, "end": 1.0, "steps": 10, "warmup": 3}, "unknown key.*warmup"),
    ({"kind": "linear", "start": 0.1, "end": 1.0}, "needs the key.*steps"),
    ({"kind": "sawtooth"}, "unknown schedule kind 'sawtooth'"),
    ({"start": 1.0}, "unknown schedule kind None"),
    ({"kind": "linear", "start": -0.1, "end": 1.0, "steps": 10}, "start must be a finite number > 0"),
    ({"kind": "linear", "start": 0.1, "end": 1.0, "steps": 0}, "steps must be an int >= 1"),
    ({"kind": "step", "start": 1.0, "gamma": 0.1, "milestones": [5, 2]}, "increasing"),
    ("fast", "a number or a table"),
])
def test_invalid_configs_name_the_problem(config, message):
    with pytest.raises(ValueError, match=message):
        schedule_from_config(config)


@pytest.mark.parametrize("step", [-1, 1.5, None])
def test_step_must_be_non_negative_int(step):
    with pytest.raises(ValueError, match="step must be"):
        Linear(0.1, 1.0, 10)(step)
