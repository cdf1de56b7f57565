"""Optimizers and learning-rate schedules from torch (train.optimizer, train.lr_schedule): the rates
against formulas written here, the paper's recipe pinned to its results from before, resume after a
kill bit-identical for AdamW + cosine, and the exact errors for bad settings."""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys

import pytest
import torch

from conftest import interrupted_at_epoch, wait_for_rows
from gdsoftmax.engine.config.schema import ConfigError, parse_config
from gdsoftmax.engine.data.images import load_dataset
from gdsoftmax.engine.loop.trainer import run_experiment
from gdsoftmax.engine.recipe.lr import lr_multiplier, schedule_changes
from gdsoftmax.engine.rundir.checkpoint import load_checkpoint, save_checkpoint


@pytest.fixture(scope="module")
def digits():
    return load_dataset("digits", None, download=False, val_size=0.1, split_seed=0)


@pytest.fixture
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def rows(run_dir) -> list[dict]:
    return [{k: v for k, v in json.loads(line).items() if k != "wall_time"}
            for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


# The engine's results before schedules came from torch.optim.lr_scheduler (commit 2e4e348's code, one
# thread, the embedded digits): (lr, train loss, test accuracy) of each epoch.
PINNED = {
    "paper_sgd_step": ({"loss": {"beta": 0.5}}, [
        (0.05, 2.20965166674597, 0.24444444477558136), (0.05, 1.7200176536990799, 0.6611111164093018),
        (0.005000000000000001, 0.8789935720492406, 0.7805555462837219),
        (0.0005000000000000001, 0.7382020116866511, 0.7972221970558167)]),
    "adaptive_lr_compensation": ({"data": {"val_size": 0.2}, "loss": {"beta": {
        "kind": "pid", "start": 1.0, "kp": 1.0, "ki": 2.0, "lr_compensation": True}}}, [
        (0.05, 2.2720639701511547, 0.24166665971279144), (0.04841427780394477, 1.9194600577976393, 0.675000011920929),
        (0.004049705750768917, 1.1533761032767917, 0.6638888716697693),
        (0.0003546328937673265, 0.9398670130190642, 0.6666666865348816)]),
}


@pytest.mark.parametrize("name", sorted(PINNED))
def test_the_papers_recipe_keeps_its_results(tmp_path, one_thread, name):
    spec, expected = PINNED[name]
    config = parse_config({"name": "pin", "seed": 0, **spec, "train": {"epochs": 4, "lr": 0.05, "record_epochs": [4]}})
    run_experiment(config, tmp_path / "run", progress=False)
    got = [(r["lr"], r["train_loss"], r["test_acc"]) for r in rows(tmp_path / "run")]
    if config.loss.beta.is_adaptive:  # the compensation reads the model's p_c: a CPU's rounding reaches the lr
        assert [g[0] for g in got] == pytest.approx([e[0] for e in expected], rel=1e-9)
    else:  # a step schedule is arithmetic on the config alone: the very floats, on every machine
        assert [g[0] for g in got] == [e[0] for e in expected]
    for g, e in zip(got, expected, strict=True):  # bit-identical on the machine that pinned them
        assert g[1:] == pytest.approx(e[1:], rel=1e-6, abs=1e-7)


def _reference(step: int, *, lr, epochs, per_epoch, schedule, warm=0, min_lr=0.0, milestones=(), gamma=0.1):
    """The rate at ``step`` as the schedules are defined, written out from their definitions."""
    if step < warm:
        return lr * (step + 1) / (warm + 1)
    if schedule == "cosine":
        t = (step - warm) / (epochs * per_epoch - 1 - warm)
        return min_lr + (lr - min_lr) * (1 + math.cos(math.pi * t)) / 2
    if schedule == "step":
        return lr * gamma ** len([m for m in milestones if step // per_epoch >= m])
    return lr


@pytest.mark.parametrize(("train", "reference"), [
    ({"lr_schedule": "cosine", "min_lr": 1e-4, "warmup_steps": 7}, {"schedule": "cosine", "warm": 7, "min_lr": 1e-4}),
    ({"lr_schedule": "cosine", "warmup_epochs": 0.5}, {"schedule": "cosine", "warm": 5}),
    ({"lr_schedule": "step", "warmup_steps": 3}, {"schedule": "step", "warm": 3, "milestones": (2, 3)}),
    ({"lr_schedule": "constant", "warmup_epochs": 1}, {"schedule": "constant", "warm": 10}),
])
def test_every_optimizer_step_gets_the_rate_of_its_schedule(tmp_path, digits, monkeypatch, train, reference):
    """The rates the optimizer actually stepped with, one per step, against the definitions."""
    seen = []
    real_step = torch.optim.AdamW.step

    def step(self, *args, **kwargs):
        seen.append(self.param_groups[0]["lr"])
        return real_step(self, *args, **kwargs)

    monkeypatch.setattr(torch.optim.AdamW, "step", step)
    config = parse_config({"name": "r", "data": {"val_size": 0.1}, "train": {
        "epochs": 4, "batch_size": 130, "lr": 1e-2, "optimizer": "adamw", "record_epochs": [4], **train}})
    run_experiment(config, tmp_path / "run", data=digits, progress=False)
    per_epoch = math.ceil(len(digits.train) / 130)
    assert per_epoch == 10
    expected = [_reference(s, lr=1e-2, epochs=4, per_epoch=per_epoch, **reference) for s in range(4 * per_epoch)]
    assert seen == pytest.approx(expected, rel=1e-12, abs=1e-15)
    assert [r["lr"] for r in rows(tmp_path / "run")] == pytest.approx(expected[per_epoch - 1 :: per_epoch])


def _adamw_cosine(epochs: int = 4, **extra):
    return parse_config({"name": "run", "seed": 5, "loss": {"beta": 0.5}, "train": {
        "epochs": epochs, "lr": 3e-3, "optimizer": "adamw", "optimizer_options": {"betas": [0.9, 0.99]},
        "weight_decay": 0.1, "lr_schedule": "cosine", "min_lr": 3e-4, "warmup_steps": 15, "record_epochs": [2],
        **extra}})


def test_adamw_cosine_interrupted_resumes_bit_identical(tmp_path, digits):
    run_experiment(_adamw_cosine(), tmp_path / "whole", data=digits, progress=False)
    with interrupted_at_epoch(3):
        run_experiment(_adamw_cosine(), tmp_path / "cut", data=digits, progress=False)
    run_experiment(_adamw_cosine(), tmp_path / "cut", data=digits, progress=False)
    assert rows(tmp_path / "cut") == rows(tmp_path / "whole")
    a, b = (load_checkpoint(tmp_path / r / "checkpoint.pt") for r in ("whole", "cut"))
    assert all(torch.equal(a["model"][k], b["model"][k]) for k in a["model"])
    assert a["schedule"]["scheduler"]["last_epoch"] == 4 * math.ceil(len(digits.train) / 100)


def test_a_checkpoint_without_schedule_state_resumes_at_the_same_rates(tmp_path, digits):
    """Checkpoints written before the schedule was kept: the closed form gives the rates back."""
    run_experiment(_adamw_cosine(), tmp_path / "whole", data=digits, progress=False)
    with interrupted_at_epoch(3):
        run_experiment(_adamw_cosine(), tmp_path / "old", data=digits, progress=False)
    path = tmp_path / "old" / "checkpoint.pt"
    state = load_checkpoint(path)
    del state["schedule"]
    save_checkpoint(path, state)
    run_experiment(_adamw_cosine(), tmp_path / "old", data=digits, progress=False)
    assert [r["lr"] for r in rows(tmp_path / "old")] == [r["lr"] for r in rows(tmp_path / "whole")]


@pytest.mark.slow  # make test resumes AdamW + cosine after an interrupt; SIGKILL anywhere: test_trainer
def test_adamw_cosine_killed_with_sigkill_resumes_bit_identical(tmp_path):
    config = tmp_path / "adamw.toml"
    config.write_text('name = "adamw"\nseed = 1\n[data]\nval_size = 137\n[loss]\nbeta = 0.5\n[train]\nepochs = 20\n'
                      'lr = 3e-3\noptimizer = "adamw"\noptimizer_options = { betas = [0.9, 0.99] }\n'
                      "lr_schedule = \"cosine\"\nmin_lr = 3e-4\nwarmup_epochs = 2\nrecord_epochs = [6]\n")

    def cli(out):
        return subprocess.Popen([sys.executable, "-m", "gdsoftmax", "train", str(config), "--out", str(out),
                                 "--no-progress"], stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT,
                                env={**os.environ, "OMP_NUM_THREADS": "1"})

    assert cli(tmp_path / "whole").wait(timeout=300) == 0
    killed = cli(tmp_path / "killed")
    wait_for_rows(tmp_path / "killed" / "adamw", 5, killed, timeout=120)
    killed.send_signal(signal.SIGKILL)
    assert killed.wait(timeout=60) == -signal.SIGKILL
    assert cli(tmp_path / "killed").wait(timeout=300) == 0
    assert rows(tmp_path / "killed" / "adamw") == rows(tmp_path / "whole" / "adamw")
    a, b = (load_checkpoint(tmp_path / r / "adamw" / "checkpoint.pt") for r in ("whole", "killed"))
    assert all(torch.equal(a["model"][k], b["model"][k]) for k in a["model"])


def test_extending_a_cosine_run_is_refused_and_a_step_run_is_not():
    cosine = _adamw_cosine(epochs=4)
    assert schedule_changes(cosine, _adamw_cosine(epochs=8), 4) == [1, 2, 3, 4]
    step = parse_config({"train": {"epochs": 4, "lr_milestones": [0.5]}})
    longer = parse_config({"train": {"epochs": 8, "lr_milestones": [0.5]}})
    assert schedule_changes(step, longer, 2) == []
    assert schedule_changes(step, longer, 3) == [3]  # the milestone moved from epoch 2 to 4


def test_lr_multiplier_never_reaches_zero_in_the_warm_up():
    config = parse_config({"train": {"epochs": 1, "warmup_steps": 4, "lr_schedule": "constant"}})
    assert [lr_multiplier(config, 10, s) for s in range(6)] == [0.2, 0.4, 0.6, 0.8, 1.0, 1.0]


@pytest.mark.parametrize(("train", "message"), [
    ({"optimizer": "adam"}, "train.optimizer must be one of ['adamw', 'sgd'], got 'adam'"),
    ({"optimizer": "adamw", "optimizer_options": {"nesterov": True}},
     "train.optimizer_options.nesterov is not an argument of torch.optim.AdamW that a config sets"),
    ({"optimizer_options": {"momentum": 0.5}}, "train.optimizer_options.momentum is not an argument"),
    ({"optimizer": "adamw", "optimizer_options": {"betas": [1.5, 0.99]}},
     "train.optimizer_options: torch.optim.AdamW refuses them (ValueError: Invalid beta parameter at index 0: 1.5)"),
    ({"optimizer": "adamw", "optimizer_options": {"betas": [0.9]}},
     "train.optimizer_options: torch.optim.AdamW refuses them (IndexError: tuple index out of range)"),
    ({"optimizer": "adamw", "device": "cpu", "optimizer_options": {"capturable": True}},
     "train.optimizer_options: torch.optim.AdamW refuses them (AssertionError: If capturable=True"),
    ({"lr_schedule": "linear"}, "train.lr_schedule must be one of ('step', 'cosine', 'constant'), got 'linear'"),
    ({"lr": 0.1, "min_lr": 0.1}, "train.min_lr must be in [0, train.lr = 0.1)"),
    ({"epochs": 2, "warmup_epochs": 2}, "train.warmup_epochs must be shorter than train.epochs = 2"),
    ({"warmup_steps": -1}, "train.warmup_epochs/warmup_steps must be >= 0"),
])
def test_bad_optimizer_and_schedule_settings_name_the_key(train, message):
    with pytest.raises(ConfigError) as caught:
        parse_config({"train": train})
    assert str(caught.value).startswith(message)
