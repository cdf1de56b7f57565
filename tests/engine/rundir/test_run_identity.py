"""A run directory is what it says it is: one config per directory, one writer at a time."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time

import pytest

from gdsoftmax.cli import main
from gdsoftmax.engine.config.schema import parse_config
from gdsoftmax.engine.data.images import load_dataset
from gdsoftmax.engine.loop.trainer import run_experiment
from gdsoftmax.engine.rundir.records import RunLockedError, RunMismatchError
from gdsoftmax.engine.rundir.writer import RunWriter
from gdsoftmax.engine.sweeps.sweep import run_sweep


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


def constant_lr(epochs: int) -> dict:
    return {**spec(epochs=epochs), "train": {**spec(epochs=epochs)["train"], "lr_milestones": []}}


def test_more_epochs_extend_a_run_whose_schedule_allows_it_and_fewer_are_refused(tmp_path, digits):
    run_experiment(parse_config(constant_lr(2)), tmp_path / "run", data=digits, progress=False)
    longer = run_experiment(parse_config(constant_lr(3)), tmp_path / "run", data=digits, progress=False)
    assert longer["epochs"] == 3
    assert epochs_of(tmp_path / "run") == [1, 2, 3]
    assert json.loads((tmp_path / "run" / "run.json").read_text())["extended_from"] == [2]  # it says so
    with pytest.raises(RunMismatchError, match=r"has trained 3 epochs, more than train\.epochs = 2"):
        run_experiment(parse_config(constant_lr(2)), tmp_path / "run", data=digits, progress=False)


def test_an_extension_that_would_rewrite_the_lr_of_trained_epochs_is_refused(tmp_path, digits):
    """Milestones are fractions of train.epochs: 4 -> 8 epochs would move the 4-epoch run's lr steps."""
    run_experiment(parse_config(spec(epochs=4)), tmp_path / "run", data=digits, progress=False)
    before = (tmp_path / "run" / "metrics.jsonl").read_text()
    with pytest.raises(RunMismatchError, match=r"trained 4 epochs under train\.epochs = 4.*from epoch 3.*--restart"):
        run_experiment(parse_config(spec(epochs=8)), tmp_path / "run", data=digits, progress=False)
    assert (tmp_path / "run" / "metrics.jsonl").read_text() == before
    assert "extended_from" not in json.loads((tmp_path / "run" / "run.json").read_text())


def test_restart_takes_the_lock_before_it_deletes_anything(tmp_path, digits):
    run_experiment(parse_config(spec(beta=1.0)), tmp_path / "run", data=digits, progress=False)
    files = sorted(p.name for p in (tmp_path / "run").iterdir())
    # another process writing it, as far as the lock says
    with RunWriter(tmp_path / "run").lock(), pytest.raises(RunLockedError):
        run_experiment(parse_config(spec(beta=0.01)), tmp_path / "run", data=digits, progress=False, restart=True)
    assert sorted(p.name for p in (tmp_path / "run").iterdir() if p.name != "lock") == files
    assert json.loads((tmp_path / "run" / "run.json").read_text())["identity"]["loss.beta"] == 1.0


def test_a_sweep_with_restart_leaves_a_running_cell_alone(tmp_path, digits):
    grid = {**spec(beta=1.0), "name": "grid", "sweep": {"seed": [1, 2]}}
    run_sweep(parse_config(grid), tmp_path, progress=False, log=lambda *_: None)
    cell = tmp_path / "grid" / "seed=1"
    before = {p.name: p.read_bytes() for p in cell.iterdir() if p.is_file()}
    with RunWriter(cell).lock(), pytest.raises(RunLockedError):
        run_sweep(parse_config({**grid, "loss": {"beta": 0.01}}), tmp_path, progress=False, restart=True,
                  log=lambda *_: None)
    assert {p.name: p.read_bytes() for p in cell.iterdir() if p.is_file() and p.name != "lock"} == before


def test_restart_discards_the_tensorboard_events_too(tmp_path, digits):
    pytest.importorskip("tensorboard")
    logged = {**spec(beta=5.0), "train": {**spec()["train"], "log": ["tensorboard"]}}
    run_experiment(parse_config(logged), tmp_path / "run", data=digits, progress=False)
    first = set((tmp_path / "run" / "tensorboard").rglob("*"))
    run_experiment(parse_config({**logged, "loss": {"beta": 0.01}}), tmp_path / "run", data=digits, progress=False,
                   restart=True)
    assert not first & set((tmp_path / "run" / "tensorboard").rglob("events*"))


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
        # The first holds the lock, stopped, while the second starts: however long the second's imports take,
        # it meets a live writer (without the stop, a fast first run could finish before the second looks).
        first.send_signal(signal.SIGSTOP)
        try:
            second = subprocess.run(command, capture_output=True, text=True, timeout=120)
        finally:
            first.send_signal(signal.SIGCONT)
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


def test_cells_whose_values_print_alike_read_back(tmp_path, digits, capsys):
    """Of two warm-ups that differ only in their length, the second gets a ~hash suffix; config.toml must load."""
    from gdsoftmax.engine.config.schema import load_config

    ramps = [{"kind": "linear", "start": 0.1, "end": 1.0, "epochs": 1},
             {"kind": "linear", "start": 0.1, "end": 1.0, "epochs": 2}]
    grid = {**spec(), "name": "alike", "sweep": {"loss.beta": ramps}}
    run_sweep(parse_config(grid), tmp_path, progress=False, log=lambda *_: None)
    cells = sorted((tmp_path / "alike").iterdir())
    assert len(cells) == 2
    assert cells[0].name == "beta=linear0.1-1"
    assert cells[1].name.startswith("beta=linear0.1-1~")
    assert load_config(cells[1] / "config.toml").name == cells[1].name
    assert main(["report", str(tmp_path / "alike"), "--out", str(tmp_path / "report")]) == 0
    assert main(["train", str(cells[1] / "config.toml"), "--out", str(tmp_path), "--no-progress"]) == 0
    assert "damaged" not in capsys.readouterr().err


def test_a_run_resumed_on_changed_data_is_refused(tmp_path, digits):
    from conftest import interrupted_at_epoch
    from gdsoftmax.engine.data.images import Dataset, Split

    with interrupted_at_epoch(2):
        run_experiment(parse_config(spec(epochs=3)), tmp_path / "run", data=digits, progress=False)
    assert json.loads((tmp_path / "run" / "run.json").read_text())["data"] == digits.fingerprint()
    labels = digits.train.labels.clone()
    labels[:5] = (labels[:5] + 1) % 10  # five labels changed: another copy of the "same" data
    changed = Dataset(digits.name, Split(digits.train.images, labels), digits.val, digits.test, digits.num_classes,
                      digits.mean, digits.std, digits.pixel_max)
    with pytest.raises(RunMismatchError, match=r"started on other data than it would resume on.*--restart"):
        run_experiment(parse_config(spec(epochs=3)), tmp_path / "run", data=changed, progress=False)
    assert run_experiment(parse_config(spec(epochs=3)), tmp_path / "run", data=digits, progress=False)["epochs"] == 3
