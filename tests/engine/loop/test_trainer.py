"""Training runs: files, the paper's recipe, resuming after SIGKILL, and DDP on 2 CPU processes."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import wait_for_rows
from gdsoftmax.engine.config.schema import load_config, parse_config
from gdsoftmax.engine.loop.trainer import learning_rate, run_experiment
from gdsoftmax.engine.rundir.checkpoint import load_checkpoint

TINY = """
name = "tiny"
seed = 3
[data]
dataset = "digits"
val_size = 137          # 1300 training samples: batches split evenly over 2 processes
[train]
epochs = {epochs}
batch_size = 100
lr = 0.05
record_epochs = [1, 3]
[loss]
beta = {{ kind = "linear", start = 0.05, end = 0.5, epochs = {epochs} }}
"""


def write_config(tmp_path: Path, epochs: int = 4) -> Path:
    path = tmp_path / "tiny.toml"
    path.write_text(TINY.format(epochs=epochs))
    return path


def cli(*args, env=None, **kwargs) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "gdsoftmax", *args], env={**os.environ, **(env or {})},
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, **kwargs)


def test_run_writes_every_file(tmp_path):
    config = load_config(write_config(tmp_path))
    summary = run_experiment(config, tmp_path / "run", progress=False)
    run = tmp_path / "run"
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in rows] == [1, 2, 3, 4]
    assert rows[-1]["test_acc"] > 0.5
    assert summary["test_acc"] == rows[-1]["test_acc"]
    # beta follows the warm-up every iteration: 13 steps per epoch, the last row at step 51 of 52
    assert [r["beta"] for r in rows] == pytest.approx([0.05 + 0.45 * (13 * e - 1) / 52 for e in (1, 2, 3, 4)])
    assert set(rows[0]) >= {"train_loss", "train_ce", "train_acc", "val_acc", "test_acc", "beta", "lr", "wall_time"}
    assert load_config(run / "config.toml") == config  # the resolved config reruns the same run
    samples = np.load(run / "samples.npz")
    assert samples["epochs"].tolist() == [1, 3, 4]
    assert samples["p_true"].shape == (3, 1300)
    assert samples["p_true"].dtype == np.float16
    assert samples["correct"].dtype == bool
    predictions = np.load(run / "predictions.npz")
    assert predictions["test_logits"].shape == (360, 10)
    assert predictions["val_labels"].shape == (137,)
    state = load_checkpoint(run / "checkpoint.pt")
    assert state["epoch"] == 4
    assert {"torch", "numpy_keys", "python", "data"} <= set(state["rng"])
    assert json.loads((run / "result.json").read_text())["epochs"] == 4


def test_learning_rate_is_the_papers_step_decay():
    config = parse_config({"train": {"epochs": 100, "lr": 0.1}})
    assert [learning_rate(config, e) for e in (0, 49, 50, 74, 75, 99)] == pytest.approx(
        [0.1, 0.1, 0.01, 0.01, 0.001, 0.001])


def test_same_seed_same_weights_other_seed_other_weights(tmp_path):
    config = load_config(write_config(tmp_path, epochs=1))
    run_experiment(config, tmp_path / "a", progress=False)
    run_experiment(config, tmp_path / "b", progress=False)
    config.seed = 4
    run_experiment(config, tmp_path / "c", progress=False)
    a, b, c = (load_checkpoint(tmp_path / r / "checkpoint.pt")["model"] for r in "abc")
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not all(torch.equal(a[k], c[k]) for k in a)


def _rows_without_time(run: Path) -> list[dict]:
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    return [{k: v for k, v in r.items() if k != "wall_time"} for r in rows]


def test_sigkill_at_any_moment_then_resume_is_bit_identical(tmp_path):
    epochs = 30
    config_path = write_config(tmp_path, epochs=epochs)
    reference = tmp_path / "reference"
    assert cli("train", str(config_path), "--out", str(reference), "--no-progress").wait(timeout=300) == 0

    out = tmp_path / "killed"
    run = out / "tiny"
    rng = random.Random(0)
    kills = 0
    # 1. killed inside the checkpoint write: the new file is complete on disk but not yet renamed
    killer = Path(__file__).resolve().parents[2] / "kill_during_checkpoint.py"
    proc = subprocess.Popen([sys.executable, str(killer), "train", str(config_path), "--out", str(out),
                             "--no-progress"],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    proc.wait(timeout=300)
    assert proc.returncode == -signal.SIGKILL
    # the first checkpoint write was cut between fsync and rename: the complete temp file is left
    # behind and no checkpoint is in place, so the next start begins from scratch
    assert any(p.name.startswith(".checkpoint.pt.") for p in run.iterdir())
    assert not (run / "checkpoint.pt").exists()
    kills += 1
    # 2. killed at random moments: mid-epoch, mid-evaluation, mid-write
    for after_rows in (3, 16):
        proc = cli("train", str(config_path), "--out", str(out), "--no-progress")
        wait_for_rows(run, after_rows, proc)
        time.sleep(rng.uniform(0, 0.05))
        if proc.poll() is None:
            proc.send_signal(signal.SIGKILL)
            kills += 1
        proc.wait(timeout=60)
    assert kills >= 2
    assert cli("train", str(config_path), "--out", str(out), "--no-progress").wait(timeout=300) == 0

    expected = load_checkpoint(reference / "tiny" / "checkpoint.pt")
    resumed = load_checkpoint(run / "checkpoint.pt")
    assert all(torch.equal(expected["model"][k], resumed["model"][k]) for k in expected["model"])
    assert _rows_without_time(run) == _rows_without_time(reference / "tiny")  # same rows, none duplicated
    for name in ("samples.npz", "predictions.npz"):
        a, b = np.load(reference / "tiny" / name), np.load(run / name)
        assert all(np.array_equal(a[k], b[k]) for k in a)


def test_rerunning_a_finished_run_changes_nothing(tmp_path):
    config = load_config(write_config(tmp_path, epochs=2))
    run_experiment(config, tmp_path / "run", progress=False)
    before = (tmp_path / "run" / "checkpoint.pt").read_bytes()
    run_experiment(config, tmp_path / "run", progress=False)
    assert (tmp_path / "run" / "checkpoint.pt").read_bytes() == before
    assert len(_rows_without_time(tmp_path / "run")) == 2


# make test runs the β-loss under DDP; the margin heads (tested single-process in test_heads) are slow
# two gloo processes per case (about 18 s each on 2 cores): make test-all runs them
@pytest.mark.slow
@pytest.mark.parametrize("loss", ["gdsoftmax", "arcface", "sphereface", "center"])
def test_ddp_on_two_cpu_processes_matches_one_process(tmp_path, loss):
    """The β-loss, and margin heads whose weight (or Center loss's centres) live in the wrapped model."""
    config_path = write_config(tmp_path, epochs=2)
    overrides = [] if loss == "gdsoftmax" else ["--set", f"loss.name={loss}"]
    single = cli("train", str(config_path), "--out", str(tmp_path / "single"), "--no-progress", *overrides)
    assert single.wait(timeout=300) == 0
    launcher = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
                "-m", "gdsoftmax", "train", str(config_path), "--out", str(tmp_path / "ddp"), "--no-progress",
                *overrides]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    result = subprocess.run(launcher, capture_output=True, text=True, timeout=300, env=env)
    assert result.returncode == 0, result.stdout + result.stderr
    a = load_checkpoint(tmp_path / "single" / "tiny" / "checkpoint.pt")["model"]
    b = load_checkpoint(tmp_path / "ddp" / "tiny" / "checkpoint.pt")["model"]
    for key in a:  # 26 SGD steps on half-batches with averaged gradients: equal up to float rounding
        torch.testing.assert_close(b[key], a[key], rtol=1e-4, atol=1e-5)
    rows_single = _rows_without_time(tmp_path / "single" / "tiny")
    rows_ddp = _rows_without_time(tmp_path / "ddp" / "tiny")
    assert [r["epoch"] for r in rows_ddp] == [1, 2]
    assert rows_ddp[-1]["test_acc"] == pytest.approx(rows_single[-1]["test_acc"], abs=0.01)
