"""The Table 1 study report (gdsoftmax.studies.table1_study) on small digits sweeps."""

from __future__ import annotations

import re
import shutil

import numpy as np
import pytest

from gdsoftmax.cli import main
from gdsoftmax.engine.config.schema import parse_config
from gdsoftmax.engine.rundir.writer import RunWriter
from gdsoftmax.engine.sweeps.sweep import run_sweep
from gdsoftmax.studies.table1_cells import arm_of
from gdsoftmax.studies.table1_study import build_table1_report

TRAIN = {"epochs": 3, "lr": 0.05, "batch_size": 64, "record_epochs": [1, 3], "lr_milestones": []}


@pytest.fixture(scope="module")
def sweeps(tmp_path_factory):
    root = tmp_path_factory.mktemp("table1")
    recipe = {"name": "recipe", "train": TRAIN, "sweep": {"loss.beta": [1.0, 0.1, 0.001], "seed": [0, 1, 2]}}
    factors = {"name": "factors", "train": TRAIN,
               "sweep": {"loss.beta": [1.0, 0.001], "seed": [0, 1],
                         "variants": [{"label": "narrow", "model.options": {"hidden": [8]}},
                                      {"label": "u70", "loss.numerics": "paper-u70"}]}}
    warmups = {"name": "warmups", "train": TRAIN,
               "sweep": {"seed": [0, 1], "variants": [
                   {"label": "ce", "loss.beta": 1.0},
                   {"label": "warmup-v1", "loss.beta": {"kind": "linear", "start": 0.001, "end": 0.01, "epochs": 3}}]}}
    for spec in (recipe, factors, warmups):
        run_sweep(parse_config(spec), root, progress=False, log=lambda _: None)
    return root


def test_arm_names():
    assert arm_of("beta=0.001") == "as stated"
    assert arm_of("inputs-raw_beta=1") == "inputs-raw"


def test_table1_counts_are_the_runs_samples_counted_independently(sweeps, tmp_path):
    path = build_table1_report(sweeps / "recipe", tmp_path, factors_dir=sweeps / "factors",
                               warmups_dir=sweeps / "warmups", preamble=["Recipe text."])
    text = path.read_text()
    # an independent count of the first row at the last epoch, for beta = 1
    counts = []
    for seed in (0, 1, 2):
        with np.load(sweeps / "recipe" / f"beta=1_seed={seed}" / "samples.npz") as f:
            counts.append(int((f["p_true"][-1].astype(np.float64) <= 0.2).sum()))
    row = next(line for line in text.splitlines() if line.startswith("| (0, 0.2]"))
    assert f"{np.mean(counts):.0f} ± {np.std(counts, ddof=1):.0f} (903)" == row.split("|")[2].strip()
    # beside ours, the paper's counts for beta = 1, 0.1 and 0.001 (arXiv v1 Table 1), in that order
    assert re.findall(r"\((\d+)\)", row) == ["903", "1105", "2375"]
    for heading in ("## The first row's claim", "## Test accuracy", "## Figs. 4–5", "## What produces the paper",
                    "## The MNIST warm-up", "## Compute"):
        assert heading in text
    assert text.startswith("# ")
    assert "Recipe text." in text
    arms = [line.split("|")[1].strip() for line in text.splitlines() if re.match(r"\| (as stated|narrow|u70) \|", line)]
    assert arms == ["as stated", "narrow", "u70"] * 2  # the factor table, then Δ along training
    assert "model.options = {'hidden': [8]}" in text
    assert "loss.numerics = paper-u70" in text
    for image in ("low_confidence_along_training.png", "confidence_dynamics.png"):
        assert (tmp_path / image).stat().st_size > 0
        assert f"({image})" in text


def test_cli_writes_the_report_and_names_a_missing_sweep(sweeps, tmp_path, capsys):
    assert main(["table1", str(sweeps / "recipe"), "--out", str(tmp_path)]) == 0
    assert (tmp_path / "report.md").exists()
    # the tests' recipe is the digits stand-in: the report says its counts are not MNIST's
    assert "**These runs are on digits, not MNIST:**" in (tmp_path / "report.md").read_text()
    assert main(["table1", str(tmp_path / "nowhere")]) == 2
    assert "does not exist" in capsys.readouterr().err


def test_a_recipe_without_beta_1_is_refused(sweeps, tmp_path):
    with pytest.raises(ValueError, match="needs finished runs at β = 1"):
        build_table1_report(sweeps / "warmups", tmp_path)


def test_cells_that_stopped_are_listed_with_their_reason(sweeps, tmp_path):
    factors = tmp_path / "factors"
    shutil.copytree(sweeps / "factors", factors)
    RunWriter(factors / "wide_beta=0.001_seed=0").record_failure(
        "TrainingDiverged: the loss became NaN or infinite, so training stopped (wide: epoch 2, step 9). The run keeps")
    text = build_table1_report(sweeps / "recipe", tmp_path / "out", factors_dir=factors).read_text()
    row = next(line for line in text.splitlines() if line.startswith("| wide_beta=0.001_seed=0 |"))
    assert "| 0 |" in row
    assert "(wide: epoch 2, step 9)." in row
    assert "The run keeps" not in row


def test_an_arm_with_one_beta_finished_is_set_beside_the_recipe(sweeps, tmp_path):
    factors = tmp_path / "factors"
    shutil.copytree(sweeps / "factors", factors, ignore=shutil.ignore_patterns("narrow_beta=0.001_seed=*"))
    text = build_table1_report(sweeps / "recipe", tmp_path / "out", factors_dir=factors).read_text()
    assert "Arms with one β finished" in text
    row = next(line for line in text.splitlines() if line.startswith("| narrow | 1 | 2 |"))
    assert not any(line.startswith("| narrow | model.options") for line in text.splitlines())
    assert row.count("±") == 4
