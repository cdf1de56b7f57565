"""Sweeps through submitit's local executor: a job killed mid-training, resubmitted, completes the
grid with results identical to an uninterrupted sweep; --status reads each cell's state."""

import json
import os
import signal
import time

import numpy as np
import pytest

from gdsoftmax.cli import main
from gdsoftmax.engine.config.schema import parse_config
from gdsoftmax.engine.rundir.records import RunMismatchError
from gdsoftmax.engine.rundir.writer import RunWriter
from gdsoftmax.engine.sweeps.launcher import format_status, grid_status, job_groups, submit_sweep
from gdsoftmax.engine.sweeps.sweep import run_sweep

pytest.importorskip("submitit")

SPEC = {"name": "grid", "data": {"val_size": 300}, "model": {"options": {"hidden": [256, 256]}},
        "train": {"epochs": 40, "lr": 0.05, "record_epochs": [1, 40]},
        "launcher": {"array_parallelism": 2, "timeout_min": 10},
        "sweep": {"loss.beta": [1.0, 0.1], "seed": [0, 1]}}


def _rows(run_dir):
    return [{k: v for k, v in json.loads(line).items() if k != "wall_time"}
            for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def _kill_a_worker_mid_run(root, timeout=120.0):
    """SIGKILL the process training some cell once it has written 3 epochs (and not finished)."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        for cell in sorted(root.glob("*/metrics.jsonl")):
            run = RunWriter(cell.parent)
            writer = run.writer()
            if writer is not None and len(cell.read_text().splitlines()) >= 3 and not run.is_finished:
                os.kill(int(writer["pid"]), signal.SIGKILL)
                return cell.parent.name
        time.sleep(0.01)
    raise AssertionError("no worker reached epoch 3 in time")


@pytest.mark.slow  # two submitit jobs, one killed (30 s); make test checks --status and the identity rule
def test_a_killed_job_resubmitted_completes_the_grid_identically(tmp_path):
    config = parse_config(SPEC)
    run_sweep(config, tmp_path / "reference", progress=False, log=lambda *_: None, max_stack=2)
    out = tmp_path / "launched"
    assert job_groups(config, out, max_stack=2) == [["beta=1_seed=0", "beta=1_seed=1"],
                                                    ["beta=0.1_seed=0", "beta=0.1_seed=1"]]
    jobs = submit_sweep(config, out, cluster="local", max_stack=2)
    assert len(jobs) == 2  # two workers
    killed = _kill_a_worker_mid_run(out / "grid")
    for job in jobs:
        job.wait()
    states = {s.cell: s for s in grid_status(config, out)}
    assert states[killed].state == "interrupted"
    assert 3 <= states[killed].epochs_done < 40
    assert "interrupted" in format_status(list(states.values()))

    again = submit_sweep(config, out, cluster="local", max_stack=2)  # only the killed job's cells
    assert len(again) == 1
    again[0].result()
    assert {s.state for s in grid_status(config, out)} == {"done"}
    for cell in ("beta=1_seed=0", "beta=1_seed=1", "beta=0.1_seed=0", "beta=0.1_seed=1"):
        ours, reference = out / "grid" / cell, tmp_path / "reference" / "grid" / cell
        assert _rows(ours) == _rows(reference)
        with np.load(ours / "predictions.npz") as a, np.load(reference / "predictions.npz") as b:
            np.testing.assert_array_equal(a["test_logits"], b["test_logits"])
    assert submit_sweep(config, out, cluster="local") == []  # nothing left to do


def test_status_names_failed_running_and_pending_cells(tmp_path, capsys):
    config = parse_config({**SPEC, "train": {**SPEC["train"], "epochs": 2}})
    run_sweep(config, tmp_path, progress=False, log=lambda *_: None, only={"beta=1_seed=0"})
    failed = RunWriter(tmp_path / "grid" / "beta=0.1_seed=0")
    failed.record_failure("Traceback ...\nTrainingDiverged: the loss became NaN")
    running = RunWriter(tmp_path / "grid" / "beta=0.1_seed=1")
    with running.lock():
        states = {s.cell: s for s in grid_status(config, tmp_path)}
    assert states["beta=1_seed=0"].state == "done"
    assert (states["beta=0.1_seed=0"].state, states["beta=0.1_seed=0"].detail) == (
        "failed", "TrainingDiverged: the loss became NaN")
    assert states["beta=0.1_seed=1"].state == "running"
    assert str(os.getpid()) in states["beta=0.1_seed=1"].detail
    assert states["beta=1_seed=1"].state == "pending"
    path = tmp_path / "grid.toml"
    path.write_text('name = "grid"\n[train]\nepochs = 2\nlr = 0.05\nrecord_epochs = [1, 40]\n[sweep]\n'
                    '"loss.beta" = [1.0, 0.1]\nseed = [0, 1]\n[data]\nval_size = 300\n[model]\n'
                    'options = { hidden = [256, 256] }\n')
    assert main(["sweep", str(path), "--out", str(tmp_path), "--status"]) == 0
    out = capsys.readouterr().out
    assert "1 done, 1 failed, 2 pending of 4 cells" in out


def test_status_and_the_launcher_apply_the_run_identity(tmp_path, capsys):
    """A grid trained at lr 0.05 is not 'done' for the same grid at lr 0.5: the plain sweep refuses it,
    and so do --status (it says 'other config') and the launcher (it submits nothing)."""
    config = parse_config({**SPEC, "train": {**SPEC["train"], "epochs": 2}})
    run_sweep(config, tmp_path, progress=False, log=lambda *_: None, only={"beta=1_seed=0"})
    other = parse_config({**SPEC, "train": {**SPEC["train"], "epochs": 2, "lr": 0.5}})
    states = {s.cell: s for s in grid_status(other, tmp_path)}
    assert states["beta=1_seed=0"].state == "other config"
    assert "train.lr (0.05 there, 0.5 now)" in states["beta=1_seed=0"].detail
    with pytest.raises(RunMismatchError, match=r"1 cell\(s\).*beta=1_seed=0.*train\.lr"):
        submit_sweep(other, tmp_path, cluster="local")
    assert not (tmp_path / "grid" / ".submitit").exists()
