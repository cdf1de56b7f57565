"""The metric log cannot lose an epoch, a diverging run stops with one line, and JSON stays standard."""

from __future__ import annotations

import json
import math
import shutil

import pytest

from conftest import interrupted_at_epoch
from gdsoftmax.cli import main
from gdsoftmax.engine.config.schema import parse_config
from gdsoftmax.engine.data.images import load_dataset
from gdsoftmax.engine.loop.trainer import TrainingDiverged, run_experiment
from gdsoftmax.engine.rundir.records import EpochRow, RunResult
from gdsoftmax.engine.rundir.writer import RunWriter


@pytest.fixture(scope="module")
def digits():
    return load_dataset("digits", None, download=False, val_size=0.1, split_seed=0)


def config(**train):
    return parse_config({"name": "run", "seed": 2, "loss": {"beta": 0.1},
                         "train": {"epochs": 3, "lr": 0.05, "record_epochs": [1], **train}})


def rows_of(run_dir) -> list[dict]:
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    for row in rows:
        row.pop("wall_time")
    return rows


def test_a_lost_last_row_is_restored_on_resume(tmp_path, digits):
    run_experiment(config(), tmp_path / "whole", data=digits, progress=False)
    with interrupted_at_epoch(3):
        run_experiment(config(), tmp_path / "cut", data=digits, progress=False)
    metrics = tmp_path / "cut" / "metrics.jsonl"
    metrics.write_text(metrics.read_text().splitlines()[0] + "\n")  # the line of epoch 2 is lost
    result = run_experiment(config(), tmp_path / "cut", data=digits, progress=False)
    assert [r["epoch"] for r in rows_of(tmp_path / "cut")] == [1, 2, 3]
    assert rows_of(tmp_path / "cut") == rows_of(tmp_path / "whole")
    assert result["epochs"] == 3


def test_the_result_counts_epochs_by_their_numbers_not_by_rows():
    def row(epoch):
        return EpochRow(epoch, epoch * 10, 1.0, 0.1, 1.0, 1.0, 0.5, 1.0, 0.5, 1.0, 0.5, float(epoch))

    result = RunResult.from_rows(config(), [row(1), row(3), row(4)])
    assert result.epochs == 4


def test_a_diverging_run_stops_naming_epoch_and_step_and_keeps_its_last_checkpoint(tmp_path, digits):
    # the learning rate jumps by 1e12 for the third epoch, which drives the loss to NaN there
    diverging = config(lr_milestones=[0.5], lr_gamma=1e12, grad_clip=0.0)
    expected = r"run: epoch 3, step \d+ \(batch \d+\).*checkpoint of epoch 2"
    with pytest.raises(TrainingDiverged, match=expected) as caught:
        run_experiment(diverging, tmp_path / "run", data=digits, progress=False)
    assert caught.value.runs == ("run",)  # which run of a (stacked) group diverged
    assert [r["epoch"] for r in rows_of(tmp_path / "run")] == [1, 2]
    assert RunWriter(tmp_path / "run").checkpoint_epoch() == 2
    assert not (tmp_path / "run" / "result.json").exists()


def test_divergence_in_the_first_epoch_writes_no_row(tmp_path, digits):
    with pytest.raises(TrainingDiverged, match=r"epoch 1, step \d+"):
        run_experiment(config(lr=1e12, grad_clip=0.0), tmp_path / "run", data=digits, progress=False)
    assert rows_of(tmp_path / "run") == []
    assert not (tmp_path / "run" / "checkpoint.pt").exists()
    assert not (tmp_path / "run" / "lock").exists()


def test_the_cli_reports_divergence_in_one_line(tmp_path, capsys):
    path = tmp_path / "c.toml"
    path.write_text('name = "c"\n[train]\nepochs = 2\nlr = 1e12\ngrad_clip = 0.0\nrecord_epochs = []\n')
    assert main(["train", str(path), "--out", str(tmp_path), "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert "the loss became NaN or infinite" in err
    assert "Traceback" not in err


def test_json_files_are_standard_null_not_nan(tmp_path, digits):
    no_validation = parse_config({"name": "run", "data": {"val_size": 0}, "train": {"epochs": 1, "record_epochs": []}})
    run_experiment(no_validation, tmp_path / "run", data=None, progress=False)
    text = (tmp_path / "run" / "metrics.jsonl").read_text() + (tmp_path / "run" / "result.json").read_text()
    assert "NaN" not in text
    row = json.loads((tmp_path / "run" / "metrics.jsonl").read_text().splitlines()[0])
    assert row["val_acc"] is None
    assert math.isnan(RunWriter(tmp_path / "run").rows()[0].val_acc)  # null reads back as NaN


@pytest.mark.parametrize(("damaged", "command"), [
    ("checkpoint.pt", "train"),
    ("run.json", "train"),
    ("result.json", "sweep"),
    ("samples.npz", "report"),
    ("predictions.npz", "report"),
])
def test_a_damaged_run_file_is_named_with_the_fix(tmp_path, capsys, damaged, command):
    path = tmp_path / "c.toml"
    path.write_text('name = "c"\n[train]\nepochs = 1\nrecord_epochs = [1]\n')
    run_args = [command if command != "report" else "sweep", str(path), "--out", str(tmp_path), "--no-progress"]
    assert main(run_args) == 0
    run = tmp_path / "c" if command == "train" else tmp_path / "c" / "c"  # a sweep puts its cells below its name
    (run / damaged).write_bytes(b"\x80 not what it should be")
    if damaged == "checkpoint.pt":  # an unfinished run resumes from its checkpoint
        (run / "result.json").unlink()
    capsys.readouterr()
    assert main(run_args if command != "report" else ["report", str(tmp_path / "c")]) == 2
    err = capsys.readouterr().err
    assert f"{damaged} is damaged and cannot be read" in err
    assert f"delete the folder {run} (that run only)" in err  # not --restart, which retrains a whole grid
    assert "--restart" not in err
    assert "Traceback" not in err
    shutil.rmtree(run)  # the advice, followed
    assert main(run_args) == 0
