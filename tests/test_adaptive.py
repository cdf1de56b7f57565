"""Adaptive beta: the PID rule, its config form, and its state surviving a resume."""

from __future__ import annotations

import json
import math

import pytest
import torch

from gdsoftmax.engine.adaptive import PIDController, gradient_scale
from gdsoftmax.engine.beta import BetaSetting
from gdsoftmax.engine.checkpoint import load_checkpoint
from gdsoftmax.engine.config import ConfigError, parse_config
from gdsoftmax.engine.trainer import run_experiment


def test_pid_rule_by_hand():
    pid = PIDController(start=1.0, kp=1.0, ki=0.5, kd=2.0, min=0.1, max=10.0)
    pid.update(0.2)  # log beta = 0.2 + 0.5 * 0.2 (no derivative on the first update)
    assert pid(123) == pytest.approx(math.exp(0.3))
    pid.update(-0.1)  # += -0.1 + 0.5 * 0.1 + 2 * (-0.3)
    assert pid(0) == pytest.approx(math.exp(0.3 - 0.1 + 0.05 - 0.6))
    for _ in range(50):
        pid.update(1.0)
    assert pid(0) == 10.0  # clamped


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
