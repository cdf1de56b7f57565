"""The studies of the paper's untested claims (issue 27): their statistics on planted effects, their
verdicts recomputed from a committed runs.csv, and one tiny study end to end through the command line."""

from __future__ import annotations

import json
import math
import zlib
from dataclasses import astuple
from pathlib import Path

import numpy as np
import pytest

from gdsoftmax.analysis.run_metrics import RunMetrics
from gdsoftmax.cli import main
from gdsoftmax.studies.run_table import RunRow, write_runs_csv
from gdsoftmax.studies.untested_claims import (
    analyse_capacity,
    analyse_lr,
    analyse_oscillation,
    analyse_tau,
    analyse_warmup_margin,
    verdicts_from_study_csv,
)
from gdsoftmax.studies.untested_report import STUDY_CLAIMS, oscillation
from gdsoftmax.studies.verdicts import read_verdicts

RESULTS = Path(__file__).resolve().parents[2] / "docs" / "results"
COMMITTED = {"oscillation": "fashion_mnist_oscillation", "tau": "fashion_mnist_tau",
             "capacity": "fashion_mnist_capacity", "warmup-margin": "fashion_mnist_warmup_margin",
             "lr": "fashion_mnist_lr"}
SEEDS = (0, 1, 2)


def _jitter(*setting) -> float:
    """A small fixed deviation per setting and seed, so paired differences have a spread."""
    return float(np.random.default_rng(zlib.crc32(repr(setting).encode())).normal(0, 0.002))


def _row(seed: int, beta: float | None, swept: dict, values: dict, group: str = "") -> RunRow:
    return RunRow(f"{group}_seed={seed}", group or f"beta={beta}", f"β = {beta}", beta, False, seed,
                  RunMetrics.of(values),
                  "fashion_mnist", "fcnn", 20, {k: json.dumps(v) for k, v in swept.items()})


def test_oscillation_is_the_std_of_changes_over_the_second_half():
    accuracy = [0.1, 0.5, 0.80, 0.84, 0.81, 0.86, 0.83, 0.85]  # second half: 0.81, 0.86, 0.83, 0.85
    changes = [0.05, -0.03, 0.02]
    mean = sum(changes) / 3
    expected = math.sqrt(sum((c - mean) ** 2 for c in changes) / 2)
    assert oscillation(accuracy) == pytest.approx(expected, rel=1e-12)
    assert math.isnan(oscillation([0.5, 0.6, 0.7]))  # one change: no spread


def _oscillation_rows(planted: float) -> list[RunRow]:
    """β = 50 oscillates ``planted`` more than β = 1, at momentum 0.99 only."""
    rows = []
    for momentum in (0.9, 0.99):
        for beta in (1.0, 50.0):
            for seed in SEEDS:
                extra = planted if (beta == 50.0 and momentum == 0.99) else 0.0
                rows.append(_row(seed, beta, {"train.momentum": momentum, "loss.beta": beta},
                                 {"oscillation": 0.01 + extra + _jitter(momentum, beta, seed) / 10,
                                  "test accuracy": 0.9, "train accuracy": 0.95, "test ece": 0.03,
                                  "overconfidence": 0.02}))
    return rows


def test_oscillation_confirmed_when_planted_at_high_momentum_and_not_otherwise():
    _, verdicts = analyse_oscillation(_oscillation_rows(planted=0.05))
    assert [v.setting for v in verdicts] == ["β = 50 vs β = 1, momentum 0.99",
                                             "β = 50: effect at momentum 0.99 minus effect at 0.9"]
    assert [v.verdict for v in verdicts] == ["confirmed", "confirmed"]
    assert {v.family_size for v in verdicts} == {3}  # two simple effects and one interaction
    assert verdicts[0].delta == pytest.approx(5.0, abs=0.1)  # points, as planted (plus the jitter)
    _, flat = analyse_oscillation(_oscillation_rows(planted=0.0))
    assert {v.verdict for v in flat} == {"inconclusive"}


def test_oscillation_study_refuses_runs_too_short_to_measure():
    rows = _oscillation_rows(0.0)
    rows[0].metrics.oscillation = math.nan
    with pytest.raises(ValueError, match="at least 6 epochs"):
        analyse_oscillation(rows)


def test_tau_one_knob_test_tells_one_knob_from_two():
    """β = 0.1 at τ = 1 is made the same as τ = 2 at β = 1 on every quantity (one knob: refuted); β = 10 matches
    τ = 0.5 in confidence and margin but costs 2 points of accuracy that no τ costs (two knobs: confirmed)."""
    rows = []
    for tau in (0.5, 1.0, 2.0, 4.0):
        for beta in (0.1, 1.0, 10.0):
            knob = tau / beta ** 0.30103  # log10(2): β = 0.1 acts as τ = 2, β = 10 as τ = 0.5
            for seed in SEEDS:
                jitter = 0.05 * _jitter(tau, beta, seed)
                rows.append(_row(seed, beta, {"loss.tau": tau, "loss.beta": beta},
                                 {"test accuracy": 0.9 - (0.02 if beta == 10 else 0.0) + jitter,
                                  "overconfidence": 0.02 * knob + jitter, "test ece": 0.03,
                                  "margin": 5.0 * knob + jitter, "train accuracy": 0.95}))
    lines, verdicts = analyse_tau(rows)
    assert [(v.claim, v.verdict) for v in verdicts] == [("tau-beta-complementary", "refuted"),
                                                        ("tau-beta-complementary", "confirmed")]
    assert "## One knob or two?" in lines
    assert any("equivalent on all three" in line for line in lines)


def _capacity_rows(slope: float) -> list[RunRow]:
    rows = []
    for width in (2, 8, 32, 128):
        for beta in (1.0, 0.01):
            for seed in SEEDS:
                effect = slope * (math.log2(width) - 4) if beta == 0.01 else 0.0
                rows.append(_row(seed, beta, {"model.options.hidden": [width, width], "loss.beta": beta},
                                 {"test accuracy": 0.8 + effect + _jitter(width, beta, seed), "train accuracy": 0.9,
                                  "test ece": 0.02, "overconfidence": 0.01}))
    return rows


def test_capacity_trend_confirmed_when_small_beta_gains_with_width_and_refuted_when_it_loses():
    _, rising = analyse_capacity(_capacity_rows(slope=0.02))
    assert [v.verdict for v in rising] == ["confirmed", "confirmed"]  # hurts at width 2; slope > 0
    assert rising[1].delta == pytest.approx(2.0, abs=0.2)  # points per doubling, as planted
    _, falling = analyse_capacity(_capacity_rows(slope=-0.02))
    assert [v.verdict for v in falling] == ["refuted", "refuted"]


FAST = {0.01: 10.0, 0.1: 4.0, 1.0: 2.0}  # epochs to 85 % at each rate


def _lr_rows(limits_by_beta: dict[float, dict[int, float]]) -> list[RunRow]:
    """Runs at lr 0.01 ... 1 that train up to ``limit[beta][seed]`` and diverge above it; a faster rate
    reaches 85 % sooner (10 epochs at 0.01, 4 at 0.1, 2 above)."""
    rows = []
    for lr in (0.01, 0.1, 1.0):
        for beta, limits in limits_by_beta.items():
            for seed in SEEDS:
                if lr <= limits[seed]:
                    values = {"test accuracy": 0.88, "diverged": 0.0, "epochs to target": FAST[lr]}
                else:
                    values = {"test accuracy": math.nan, "diverged": 1.0, "epochs to target": math.nan}
                rows.append(_row(seed, beta, {"train.lr": lr, "loss.beta": beta}, values))
    return rows


def test_lr_study_reads_the_largest_rate_that_trains_per_seed():
    limits = {1.0: {0: 0.01, 1: 0.1, 2: 0.01}, 0.1: {0: 0.1, 1: 1.0, 2: 1.0}}
    lines, verdicts = analyse_lr(_lr_rows(limits))
    assert [v.setting for v in verdicts] == ["β = 0.1 vs β = 1: log10 largest lr that trains",
                                             "β = 0.1 vs β = 1: fewest epochs to 85%"]
    # per seed: +1, +1, +2 decades; and 4 - 10, 2 - 4, 2 - 10 epochs
    assert verdicts[0].delta == pytest.approx(4 / 3)
    assert verdicts[1].delta == pytest.approx((-6 - 2 - 8) / 3)
    assert any("diverged" in line or "0/3 train" in line for line in lines)


def test_warmup_margin_compares_the_warmup_with_each_margin_loss():
    rows = [_row(seed, None, {}, {"test accuracy": accuracy + _jitter(name, seed), "train accuracy": 0.9,
                                  "test ece": 0.02, "test nll": 0.3}, group=name)
            for name, accuracy in (("ce", 0.88), ("warmup", 0.89), ("a-softmax", 0.85), ("center", 0.95))
            for seed in SEEDS]
    _, verdicts = analyse_warmup_margin(rows)
    assert [(v.setting, v.verdict) for v in verdicts] == [("warmup vs a-softmax", "confirmed"),
                                                          ("warmup vs center", "refuted")]
    assert {v.family_size for v in verdicts} == {5}
    with pytest.raises(ValueError, match="center is missing"):
        analyse_warmup_margin([r for r in rows if r.group != "center"])


def test_verdicts_recompute_from_a_written_runs_csv(tmp_path):
    rows = _capacity_rows(slope=0.02)
    write_runs_csv(tmp_path / "runs.csv", rows)
    assert ([astuple(v) for v in verdicts_from_study_csv("capacity", tmp_path / "runs.csv")]
            == [astuple(v) for v in analyse_capacity(rows)[1]])


def _plain(verdict) -> tuple:
    return tuple(None if isinstance(x, float) and math.isnan(x) else x for x in astuple(verdict))


@pytest.mark.parametrize("kind", sorted(COMMITTED))
def test_a_committed_study_recomputes_from_its_runs_csv(kind):
    folder = RESULTS / COMMITTED[kind]
    if not (folder / "report.md").exists():
        pytest.skip(f"{folder.name} has no committed report")
    committed = read_verdicts(folder / "claims.csv")
    assert {v.claim for v in committed} == {STUDY_CLAIMS[kind]}
    assert [_plain(v) for v in verdicts_from_study_csv(kind, folder / "runs.csv")] == [_plain(v) for v in committed]
    text = (folder / "report.md").read_text(encoding="utf-8")
    assert all("| " + " | ".join(v.cells()) + " |" in text for v in committed)


def test_a_tiny_oscillation_study_end_to_end(tmp_path, capsys):
    """The config's two commands on the embedded digits, with a smaller grid."""
    overrides = ["data.dataset=digits", "data.val_size=200", "train.epochs=6", "train.record_epochs=[6]",
                 "model.options={hidden=[16]}",
                 'sweep={"train.momentum"=[0.9, 0.99], "loss.beta"=[1.0, 50.0], seed=[0, 1, 2]}']
    args = ["sweep", "configs/fashion_mnist_oscillation.toml", "--out", str(tmp_path / "runs"), "--no-progress"]
    assert main([*args, *(x for o in overrides for x in ("--set", o))]) == 0
    out = tmp_path / "report"
    assert main(["study", "oscillation", str(tmp_path / "runs" / "fashion_mnist_oscillation"), "--out", str(out)]) == 0
    text = (out / "report.md").read_text(encoding="utf-8")
    assert "## Oscillation of test accuracy" in text
    assert "(k = 3)" in text
    assert (out / "oscillation.png").stat().st_size > 10_000
    rows = (out / "runs.csv").read_text(encoding="utf-8").splitlines()
    assert len(rows) == 13
    assert "oscillation" in rows[0].split(",")
    assert len(read_verdicts(out / "claims.csv")) == 2
    assert np.isfinite([v.p for v in read_verdicts(out / "claims.csv")]).all()


def test_study_errors_are_one_line(tmp_path, capsys):
    assert main(["study", "tau", str(tmp_path / "missing"), "--out", str(tmp_path / "r")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("gdsoftmax study: error:")
    assert "\n" not in err


def test_a_regime_study_that_falls_short_says_so_in_its_first_lines(tmp_path):
    """A tiny version of configs/cifar10_overconfident.toml: the embedded digits, an FCNN, 3 epochs; its β = 1
    runs are far from the over-confident regime, and the report says so before anything else."""
    overrides = ["data.dataset=digits", "data.val_size=200", "data.train_size=600", "model.name=fcnn",
                 "model.options={hidden=[32]}", "train.epochs=3", "train.record_epochs=[3]", "train.precision=fp32",
                 "train.channels_last=false", 'sweep={"loss.beta"=[1.0, 10.0], seed=[0, 1, 2]}']
    args = ["sweep", "configs/cifar10_overconfident.toml", "--out", str(tmp_path / "runs"), "--no-progress"]
    assert main([*args, *(x for o in overrides for x in ("--set", o))]) == 0
    reference = RESULTS / "mnist_fcnn"  # any report folder with a runs.csv
    out = tmp_path / "report"
    assert main(["study", "regime", str(tmp_path / "runs" / "cifar10_overconfident"), "--out", str(out),
                 "--reference", str(reference)]) == 0
    lines = (out / "report.md").read_text(encoding="utf-8").splitlines()
    assert lines[2] == "## Verdict"
    assert lines[4].startswith("**The regime was NOT reached")  # it leads the verdict it qualifies
    assert "training accuracy" in lines[4]
    text = "\n".join(lines)
    assert "## The regime beside the paper and beside a short run" in text
    assert "ECE % (10 bins)" in text
    assert "## Where ECE is lowest in β" in text
    assert text.index("## Where ECE is lowest") < text.index("## Claims")
    assert (out / "reliability.png").is_file()
