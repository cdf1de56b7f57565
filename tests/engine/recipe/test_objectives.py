"""Every objective trains through the engine and leaves plain logits for evaluation."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from gdsoftmax.baselines.heads import HEADS
from gdsoftmax.engine.config.schema import parse_config
from gdsoftmax.engine.loop.trainer import run_experiment
from gdsoftmax.engine.recipe.objectives import OBJECTIVES, build_objective


@pytest.mark.parametrize("name", OBJECTIVES)
def test_objective_trains_in_the_engine(name, tmp_path):
    options = {"cosface": {"s": 10.0}, "arcface": {"s": 10.0, "m": 0.2}}.get(name, {})
    config = parse_config({"name": name, "data": {"dataset": "digits"}, "train": {"epochs": 6, "lr": 0.05},
                           "loss": {"name": name, "options": options}})
    summary = run_experiment(config, tmp_path / name, progress=False)
    assert summary["test_acc"] > 0.5  # chance is 0.1
    predictions = np.load(tmp_path / name / "predictions.npz")
    assert predictions["test_logits"].shape == (360, 10)
    rows = [json.loads(line) for line in (tmp_path / name / "metrics.jsonl").read_text().splitlines()]
    assert (rows[0]["beta"] is None) == (name != "gdsoftmax")


def test_heads_replace_the_classifier_and_keep_plain_logits():
    from gdsoftmax.engine.models.registry import build_model

    for name in HEADS:
        model = build_model("fcnn", (1, 8, 8), 10)
        objective = build_objective(name, {}, model, beta=1.0, tau=1.0, label_smoothing=0.0)
        assert isinstance(model.classifier, HEADS[name])
        x, y = torch.randn(8, 1, 8, 8), torch.randint(10, (8,))
        loss, logits = objective(model, x, y, step=3)
        torch.testing.assert_close(logits, model(x))  # training returns the evaluation logits
        assert loss.ndim == 0
        assert model.classifier.step == 3
