"""The replication study (issue 40) on a tiny real sweep: β against the calibration toolbox, raw and after
temperature scaling, the regime read on validation, verdicts that recompute from runs.csv."""

from __future__ import annotations

import math
from dataclasses import astuple

import numpy as np
import pytest
import torch
from scipy import optimize

from gdsoftmax.cli import main
from gdsoftmax.studies.claims import verdicts_from_runs_csv
from gdsoftmax.studies.run_table import read_runs_csv
from gdsoftmax.studies.runs import load_runs
from gdsoftmax.studies.verdicts import read_verdicts

SWEEP = """
name = "rep"
[data]
dataset = "digits"
val_size = 300
[train]
epochs = 4
lr = 0.05
record_epochs = [4]
[sweep]
seed = [0, 1, 2]
variants = [
  { label = "beta=1", "loss.beta" = 1.0 },
  { label = "beta=5", "loss.beta" = 5.0 },
  { label = "beta=0.1", "loss.beta" = 0.1 },
  { label = "label-smoothing", "loss.name" = "label_smoothing", "loss.options" = { smoothing = 0.1 } },
  { label = "flsd53", "loss.name" = "flsd53" },
]
"""


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    root = tmp_path_factory.mktemp("replication")
    (root / "rep.toml").write_text(SWEEP)
    assert main(["sweep", str(root / "rep.toml"), "--out", str(root / "runs"), "--no-progress"]) == 0
    out = root / "report"
    assert main(["study", "replication", str(root / "runs" / "rep"), "--out", str(out)]) == 0
    return root / "runs" / "rep", out


def test_the_report_opens_with_the_regime_read_on_validation(study):
    _, out = study
    text = (out / "report.md").read_text(encoding="utf-8")
    lines = text.splitlines()
    assert lines[2] == "## Verdict"
    assert lines[4].startswith("**Regime: ")
    assert "on the validation split" in lines[4]
    for section in ("## Calibration table", "## Against the calibration toolbox", "## Claims"):
        assert section in text
    assert "label smoothing 0.1" in text
    assert "focal, FLSD-53" in text
    assert "Holm family: every row of this table (k = 9)." in text  # β = 5 × 3 tools × ECE, NLL, Brier
    assert "| `small-beta-compact-features` | β = 0.1 |" in text  # NC1, measured from the models


def test_runs_csv_holds_every_score_and_the_verdicts_recompute(study):
    _, out = study
    rows = read_runs_csv(out / "runs.csv")
    assert len(rows) == 15
    for row in rows:
        for key in ("test ece", "test smece", "test nll", "test brier", "temperature ece", "temperature smece",
                    "temperature nll", "temperature brier", "val overconfidence", "overconfidence", "mce bin count"):
            assert math.isfinite(row.metrics[key]), (row.run, key)
    def plain(verdicts):  # NaN (a trend's treatment) never equals itself
        return [tuple(None if isinstance(x, float) and math.isnan(x) else x for x in astuple(v)) for v in verdicts]

    assert plain(read_verdicts(out / "claims.csv")) == plain(verdicts_from_runs_csv(out / "runs.csv"))


def test_temperature_scaled_scores_match_a_fit_written_from_the_definition(study):
    """T minimises the validation NLL of logits / T (scipy, bounded scalar search); test NLL and Brier at it."""
    sweep, out = study
    rows = {r.run: r for r in read_runs_csv(out / "runs.csv")}
    run = next(r for r in load_runs(sweep) if r.path.name == "beta=5_seed=0")
    val, val_y = run.predictions["val_logits"].astype(np.float64), run.predictions["val_labels"].astype(int)
    test, test_y = run.predictions["test_logits"].astype(np.float64), run.predictions["test_labels"].astype(int)

    def nll(logits, labels):
        shifted = logits - logits.max(1, keepdims=True)
        log_p = shifted - np.log(np.exp(shifted).sum(1, keepdims=True))
        return -log_p[np.arange(len(labels)), labels].mean()

    fit = optimize.minimize_scalar(lambda t: nll(val / t, val_y), bounds=(0.05, 20), method="bounded",
                                   options={"xatol": 1e-8})
    probabilities = torch.softmax(torch.from_numpy(test / fit.x), 1).numpy()
    brier = ((probabilities - np.eye(test.shape[1])[test_y]) ** 2).sum(1).mean()
    row = rows["beta=5_seed=0"]
    assert row.metrics["T"] == pytest.approx(fit.x, rel=1e-3)
    assert row.metrics["temperature nll"] == pytest.approx(nll(test / fit.x, test_y), rel=1e-4)
    assert row.metrics["temperature brier"] == pytest.approx(brier, rel=1e-3)
    assert row.metrics["overconfidence"] == pytest.approx(
        torch.softmax(torch.from_numpy(test), 1).numpy().max(1).mean() - (test.argmax(1) == test_y).mean(), abs=1e-6)


def test_a_sweep_without_beta_1_or_validation_is_refused_in_one_line(tmp_path, capsys):
    (tmp_path / "one.toml").write_text('name = "one"\n[data]\ndataset = "digits"\nval_size = 0\n[train]\nepochs = 1\n'
                                       "[loss]\nbeta = 5.0\n")
    assert main(["train", str(tmp_path / "one.toml"), "--out", str(tmp_path / "runs")]) == 0
    capsys.readouterr()
    assert main(["study", "replication", str(tmp_path / "runs" / "one"), "--out", str(tmp_path / "out")]) == 2
    assert capsys.readouterr().err.startswith("gdsoftmax study: error: ")


def test_nc1_is_measured_from_each_model_as_written_from_the_definition(study):
    """features.json holds NC1 of the final model's training features: tr(Σ_W Σ_B⁺) / K, recomputed here with numpy
    from features taken out of the checkpointed model by hand."""
    sweep, out = study
    from gdsoftmax.engine.config.schema import load_config
    from gdsoftmax.engine.data.images import with_input_scaling
    from gdsoftmax.engine.loop.trainer import load_run_data
    from gdsoftmax.engine.models.registry import build_model
    from gdsoftmax.engine.rundir.checkpoint import load_checkpoint

    run = sweep / "beta=0.1_seed=1"
    config = load_config(run / "config.toml")
    data = with_input_scaling(load_run_data(config), config.data.input_scaling)
    model = build_model(config.model.name, data.image_shape, data.num_classes, None, **config.model.options).eval()
    model.load_state_dict(load_checkpoint(run / "checkpoint.pt")["model"])
    with torch.no_grad():
        h = model.body(data.normalize(data.train.images)).double().numpy()
    y = data.train.labels.numpy()
    means = np.stack([h[y == c].mean(0) for c in range(data.num_classes)])
    within = h - means[y]
    centred = means - means.mean(0)
    sigma_w, sigma_b = within.T @ within / len(h), centred.T @ centred / data.num_classes
    nc1 = np.trace(sigma_w @ np.linalg.pinv(sigma_b, hermitian=True)) / data.num_classes
    rows = {r.run: r for r in read_runs_csv(out / "runs.csv")}
    assert rows["beta=0.1_seed=1"].metrics["nc1"] == pytest.approx(nc1, rel=1e-6)
    assert "nc1" not in rows["label-smoothing_seed=1"].metrics  # another loss: not a claim about β
