"""A sweep whose setting diverges: the other cells go on, the failed ones are named and marked."""

from __future__ import annotations

import pytest

import gdsoftmax.engine.sweeps.sweep as sweep
from gdsoftmax.cli import main
from gdsoftmax.engine.config.schema import parse_config
from gdsoftmax.engine.loop.trainer import TrainingDiverged
from gdsoftmax.engine.rundir.writer import RunWriter
from gdsoftmax.engine.sweeps.sweep import SweepIncomplete, run_sweep

BAD_LR = 0.07  # the cells trained at this rate "diverge": training raises as a NaN loss makes it


@pytest.fixture
def diverging(monkeypatch):
    real_train = sweep.train

    def train(configs, run_dirs, **kwargs):
        if configs[0].train.lr == BAD_LR:
            raise TrainingDiverged("the loss became NaN or infinite (test)")
        return real_train(configs, run_dirs, **kwargs)

    monkeypatch.setattr(sweep, "train", train)


def test_a_sweep_goes_on_after_a_setting_diverges_and_says_which(tmp_path, diverging):
    spec = {"name": "grid", "train": {"epochs": 1, "lr": 0.05, "record_epochs": [1]},
            "sweep": {"variants": [{"label": "bad", "train.lr": BAD_LR}, {"label": "good", "train.lr": 0.05}]}}
    with pytest.raises(SweepIncomplete, match=r"1 cell\(s\) stopped and the other cells went on: bad") as caught:
        run_sweep(parse_config(spec), tmp_path, progress=False, log=lambda _: None)
    assert [r["cell"] for r in caught.value.results] == ["good"]
    assert "NaN or infinite" in RunWriter(tmp_path / "grid" / "bad").failure()
    assert RunWriter(tmp_path / "grid" / "good").is_finished


def test_the_command_line_prints_the_finished_cells_and_exits_1_naming_the_failed(tmp_path, diverging, capsys):
    config = tmp_path / "grid.toml"
    config.write_text('name = "grid"\n[train]\nepochs = 1\nlr = 0.05\nrecord_epochs = [1]\n'
                      f'[sweep]\nvariants = [{{ label = "bad", "train.lr" = {BAD_LR} }},\n'
                      '            { label = "good", "train.lr" = 0.05 }]\n')
    assert main(["sweep", str(config), "--out", str(tmp_path / "runs"), "--no-progress"]) == 1
    out, err = capsys.readouterr()
    assert "good" in out
    assert "1 cell(s) stopped and the other cells went on: bad" in err


def test_the_report_names_the_cells_that_stopped(tmp_path, diverging):
    from gdsoftmax.studies.report import build_report

    spec = {"name": "grid", "train": {"epochs": 1, "lr": 0.05, "record_epochs": [1]},
            "sweep": {"variants": [{"label": "bad", "train.lr": BAD_LR}, {"label": "good", "train.lr": 0.05}]}}
    with pytest.raises(SweepIncomplete):
        run_sweep(parse_config(spec), tmp_path, progress=False, log=lambda _: None)
    text = build_report(tmp_path / "grid", tmp_path / "report").read_text()
    assert "1 cell(s) stopped with an error and are in no table below:** bad (TrainingDiverged: the loss" in text


def test_the_report_says_which_runs_were_extended(tmp_path):
    from gdsoftmax.studies.report import build_report

    spec = {"name": "grid", "train": {"epochs": 1, "lr": 0.05, "lr_milestones": [], "record_epochs": [1]},
            "sweep": {"seed": [0]}}
    run_sweep(parse_config(spec), tmp_path, progress=False, log=lambda _: None)
    run_sweep(parse_config({**spec, "train": {**spec["train"], "epochs": 2}}), tmp_path, progress=False,
              log=lambda _: None)
    text = build_report(tmp_path / "grid", tmp_path / "report").read_text()
    assert "1 run(s) were extended** after finishing at a shorter length" in text
    assert "seed=0 (from 1 epochs)" in text


def test_a_run_that_diverges_in_a_stack_stops_alone_and_the_others_resume(tmp_path, monkeypatch):
    """The first attempt reports one member's loss as NaN; the other trains on as a smaller stack."""
    real_train = sweep.train
    attempts = []

    def train(configs, run_dirs, **kwargs):
        attempts.append([c.name for c in configs])
        if len(attempts) == 1:
            raise TrainingDiverged("the loss became NaN or infinite (test)", runs=(configs[0].name,))
        return real_train(configs, run_dirs, **kwargs)

    monkeypatch.setattr(sweep, "train", train)
    spec = {"name": "grid", "train": {"epochs": 2, "lr": 0.05, "record_epochs": [2]},
            "sweep": {"loss.beta": [1.0, 0.1], "seed": [0]}}
    with pytest.raises(SweepIncomplete, match=r"1 cell\(s\) stopped and the other cells went on: beta=1_seed=0"):
        run_sweep(parse_config(spec), tmp_path, progress=False, log=lambda _: None)
    assert attempts == [["beta=1_seed=0", "beta=0.1_seed=0"], ["beta=0.1_seed=0"]]
    assert "NaN or infinite" in RunWriter(tmp_path / "grid" / "beta=1_seed=0").failure()
    survivor = RunWriter(tmp_path / "grid" / "beta=0.1_seed=0")
    assert survivor.is_finished
    assert survivor.result()["epochs"] == 2
