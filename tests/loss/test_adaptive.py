"""Adaptive beta: the PID rule, its config form, and its state surviving a resume."""

from __future__ import annotations

import json
import math

import pytest
import torch

from gdsoftmax.engine.config.beta import BetaSetting
from gdsoftmax.engine.config.schema import ConfigError, parse_config
from gdsoftmax.engine.loop.trainer import run_experiment
from gdsoftmax.engine.rundir.checkpoint import load_checkpoint
from gdsoftmax.loss.adaptive import PIDController, gradient_scale


def test_pid_rule_by_hand():
    """The velocity form: log beta += kp (e - e1) + ki e + kd (e - 2 e1 + e2)."""
    pid = PIDController(start=1.0, kp=1.0, ki=0.5, kd=2.0, min=0.1, max=10.0)
    pid.update(0.2)  # 1 * 0.2 + 0.5 * 0.2 (no derivative before two earlier errors)
    assert pid(123) == pytest.approx(math.exp(0.3))
    pid.update(-0.1)  # 1 * (-0.3) + 0.5 * (-0.1)
    assert pid(0) == pytest.approx(math.exp(0.3 - 0.3 - 0.05))
    pid.update(0.0)  # 1 * 0.1 + 0 + 2 * (0 + 0.2 + 0.2)
    assert pid(0) == pytest.approx(math.exp(-0.05 + 0.1 + 0.8))
    for _ in range(50):
        pid.update(1.0)
    assert pid(0) == 10.0  # clamped


def plant(log_beta: float, optimum: float, gain: float = 0.05) -> float:
    """A model's calibration gap as a function of log beta: over-confident below the optimum."""
    return gain * (optimum - log_beta)


def simulate(pid: PIDController, optima: list[float], lag: float = 0.5) -> list[float]:
    """Epochs of a first-order plant (the gap follows its target with a lag); returns log beta per epoch."""
    gap, trace = 0.0, []
    for optimum in optima:
        gap += lag * (plant(math.log(pid(0)), optimum) - gap)
        pid.update(gap)
        trace.append(math.log(pid(0)))
    return trace


def test_step_response_settles_at_the_calibrated_beta():
    trace = simulate(PIDController(start=1.0, kp=1.0, ki=2.0), [math.log(5.0)] * 80)
    assert trace[-1] == pytest.approx(math.log(5.0), abs=0.02)  # settled at the beta that zeroes the gap
    assert max(trace) < math.log(5.0) * 1.5  # with a bounded overshoot
    assert all(abs(t - math.log(5.0)) < 0.05 for t in trace[-20:])  # and stays there


def test_no_wind_up_at_the_clamps():
    """The optimum lies far above max for 40 epochs, then drops inside: beta leaves the clamp at once,
    where an integral that kept growing during saturation would hold it there for as long again."""
    optima = [math.log(1e4)] * 40 + [math.log(2.0)] * 40
    trace = simulate(PIDController(start=1.0, kp=1.0, ki=2.0, max=100.0), optima)
    assert trace[39] == pytest.approx(math.log(100.0))  # saturated
    assert trace[45] < math.log(100.0) - 0.5  # already on its way down after 5 epochs
    assert trace[-1] == pytest.approx(math.log(2.0), abs=0.05)


def test_over_confidence_raises_beta_and_under_confidence_lowers_it():
    up, down = PIDController(start=1.0), PIDController(start=1.0)
    assert up.update(0.05) > 1.0 > down.update(-0.05)


def test_state_round_trip():
    pid = PIDController(start=2.0)
    pid.update(0.3)
    clone = PIDController(start=2.0)
    clone.load_state_dict(pid.state_dict())
    assert clone.update(0.1) == pid.update(0.1)


def test_config_form_and_errors():
    controller = BetaSetting({"kind": "pid", "start": 0.5, "kp": 1.0}).schedule(steps_per_epoch=10)
    assert isinstance(controller, PIDController)
    assert controller(0) == 0.5
    with pytest.raises(ConfigError, match=r"unknown key.*gain"):
        parse_config({"loss": {"beta": {"kind": "pid", "gain": 1.0}}})
    with pytest.raises(ConfigError, match=r"data\.val_size must be > 0"):
        parse_config({"data": {"val_size": 0}, "loss": {"beta": {"kind": "pid"}}})
    with pytest.raises(ConfigError, match="min <= start <= max"):
        parse_config({"loss": {"beta": {"kind": "pid", "start": 1000.0}}})


def test_gradient_scale():
    logits = torch.tensor([[0.0, 0.0]])  # p = 1/2
    assert gradient_scale(logits, torch.tensor([0]), 3.0) == pytest.approx(1 / (1 + 2 * 0.5))
    assert gradient_scale(logits, torch.tensor([0]), 1.0) == 1.0


def test_adaptive_beta_in_training_moves_beta_and_resumes(tmp_path):
    train = {"epochs": 4, "lr": 0.05, "lr_milestones": []}
    config = parse_config({"name": "pid", "data": {"dataset": "digits"}, "train": train,
                           "loss": {"beta": {"kind": "pid", "start": 1.0, "kp": 5.0, "lr_compensation": True}}})
    run_experiment(config, tmp_path / "full", progress=False)
    rows = [json.loads(line) for line in (tmp_path / "full" / "metrics.jsonl").read_text().splitlines()]
    assert rows[0]["beta"] == 1.0
    assert len({r["beta"] for r in rows}) > 1
    assert len({r["lr"] for r in rows}) > 1  # and the learning rate compensates
    state = load_checkpoint(tmp_path / "full" / "checkpoint.pt")
    assert state["controller"]["updates"] == 4
    # stop after 2 epochs (constant lr, so the schedule does not depend on the length), then resume:
    # the same betas and weights as the uninterrupted run
    config.train.epochs = 2
    run_experiment(config, tmp_path / "split", progress=False)
    config.train.epochs = 4
    run_experiment(config, tmp_path / "split", progress=False)
    resumed = [json.loads(line) for line in (tmp_path / "split" / "metrics.jsonl").read_text().splitlines()]
    assert [r["beta"] for r in resumed] == [r["beta"] for r in rows]
    a, b = load_checkpoint(tmp_path / "full" / "checkpoint.pt"), load_checkpoint(tmp_path / "split" / "checkpoint.pt")
    assert all(torch.equal(a["model"][k], b["model"][k]) for k in a["model"])
