"""A run directory is what it says it is: one config per directory, one writer at a time."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time

import pytest

from gdsoftmax.cli import main
from gdsoftmax.engine.config import parse_config
from gdsoftmax.engine.data import load_dataset
from gdsoftmax.engine.rundir.records import RunLockedError, RunMismatchError
from gdsoftmax.engine.rundir.writer import RunWriter
from gdsoftmax.engine.sweep import run_sweep
from gdsoftmax.engine.trainer import run_experiment


def spec(epochs: int = 2, beta=5.0, lr: float = 0.05) -> dict:
    return {"name": "run", "seed": 1, "loss": {"beta": beta},
            "train": {"epochs": epochs, "lr": lr, "record_epochs": [1]}}


@pytest.fixture(scope="module")
def digits():
    return load_dataset("digits", None, download=False, val_size=0.1, split_seed=0)


def epochs_of(run_dir) -> list[int]:
    return [json.loads(line)["epoch"] for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def test_a_rerun_with_another_config_is_refused_naming_the_keys(tmp_path, digits):
    run_experiment(parse_config(spec(beta=5.0)), tmp_path / "run", data=digits, progress=False)
    with pytest.raises(RunMismatchError, match=r"loss\.beta \(5\.0 there, 0\.01 now\).*--restart"):
        run_experiment(parse_config(spec(beta=0.01)), tmp_path / "run", data=digits, progress=False)
    assert epochs_of(tmp_path / "run") == [1, 2]  # untouched
    assert json.loads((tmp_path / "run" / "result.json").read_text())["beta"] == 5.0


def test_restart_discards_the_old_run(tmp_path, digits):
    run_experiment(parse_config(spec(beta=5.0)), tmp_path / "run", data=digits, progress=False)
    result = run_experiment(parse_config(spec(beta=0.01)), tmp_path / "run", data=digits, progress=False,
                            restart=True)
    assert result["beta"] == 0.01
    assert epochs_of(tmp_path / "run") == [1, 2]
    assert {json.loads(line)["beta"] for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()} \
        == {0.01}


def test_more_epochs_extend_the_run_and_fewer_are_refused(tmp_path, digits):
    run_experiment(parse_config(spec(epochs=2)), tmp_path / "run", data=digits, progress=False)
    longer = run_experiment(parse_config(spec(epochs=3)), tmp_path / "run", data=digits, progress=False)
    assert longer["epochs"] == 3
    assert epochs_of(tmp_path / "run") == [1, 2, 3]
    with pytest.raises(RunMismatchError, match=r"has trained 3 epochs, more than train\.epochs = 2"):
        run_experiment(parse_config(spec(epochs=2)), tmp_path / "run", data=digits, progress=False)


def test_the_identity_file_records_a_fingerprint(tmp_path, digits):
    run_experiment(parse_config(spec()), tmp_path / "run", data=digits, progress=False)
    recorded = json.loads((tmp_path / "run" / "run.json").read_text())
    assert len(recorded["fingerprint"]) == 16
    assert recorded["identity"]["loss.beta"] == 5.0
    assert "train.epochs" not in recorded["identity"]  # extending a run keeps its identity


def test_a_sweep_rerun_with_another_lr_does_not_report_the_old_results(tmp_path):
    grid = {**spec(), "name": "grid", "sweep": {"loss.beta": [0.1, 5.0]}}
    run_sweep(parse_config(grid), tmp_path, progress=False, log=lambda *_: None)
    changed = {**grid, "train": {**grid["train"], "lr": 0.01}}
    with pytest.raises(RunMismatchError, match=r"train\.lr \(0\.05 there, 0\.01 now\)"):
        run_sweep(parse_config(changed), tmp_path, progress=False, log=lambda *_: None)
    results = run_sweep(parse_config(changed), tmp_path, progress=False, log=lambda *_: None, restart=True)
    assert [r["cell"] for r in results] == ["beta=0.1", "beta=5"]


def test_a_second_writer_is_refused_and_a_stale_lock_is_taken_over(tmp_path, digits):
    run = RunWriter(tmp_path / "run")
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        run.path.mkdir()
        (run.path / "lock").write_text(json.dumps({"pid": sleeper.pid, "host": socket.gethostname(),
                                                   "since": time.time()}))
        with pytest.raises(RunLockedError, match=f"process {sleeper.pid}"):
            run_experiment(parse_config(spec()), run.path, data=digits, progress=False)
    finally:
        sleeper.kill()
        sleeper.wait()
    run_experiment(parse_config(spec()), run.path, data=digits, progress=False)  # its holder is gone: taken over
    assert not (run.path / "lock").exists()  # released at the end
    assert epochs_of(run.path) == [1, 2]


def test_two_processes_on_one_run_directory(tmp_path):
    config = tmp_path / "long.toml"
    config.write_text('name = "long"\n[train]\nepochs = 40\nrecord_epochs = []\n')
    command = [sys.executable, "-m", "gdsoftmax", "train", str(config), "--out", str(tmp_path), "--no-progress"]
    first = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        deadline = time.time() + 60
        while not (tmp_path / "long" / "lock").exists() and time.time() < deadline and first.poll() is None:
            time.sleep(0.05)
        second = subprocess.run(command, capture_output=True, text=True, timeout=120)
    finally:
        first.wait(timeout=300)
    assert first.returncode == 0, first.stdout.read()
    assert second.returncode == 2
    assert "is being written by process" in second.stderr
    assert "Traceback" not in second.stderr
    assert epochs_of(tmp_path / "long") == list(range(1, 41))


def test_the_cli_says_what_differs_in_one_line(tmp_path, capsys):
    config = tmp_path / "c.toml"
    config.write_text('name = "c"\n[train]\nepochs = 1\nrecord_epochs = []\n')
    assert main(["train", str(config), "--out", str(tmp_path), "--no-progress"]) == 0
    assert main(["train", str(config), "--out", str(tmp_path), "--no-progress", "--set", "loss.beta=0.5"]) == 2
    err = capsys.readouterr().err
    assert "loss.beta (1.0 there, 0.5 now)" in err
    assert "Traceback" not in err
    assert main(["train", str(config), "--out", str(tmp_path), "--no-progress", "--set", "loss.beta=0.5",
                 "--restart"]) == 0
    assert os.path.exists(tmp_path / "c" / "result.json")
