"""gdsoftmax compare: the verdict for predictions saved by any loop, SETTING/SEED.npz, against a reference;
its tests recomputed from scores.csv by code that did not write them, and the same numbers as the engine's
own report on the same runs."""

from __future__ import annotations

import csv
import math
import shutil

import numpy as np
import pytest
from scipy import stats

from gdsoftmax.analysis.predictions import save_predictions
from gdsoftmax.cli import main
from gdsoftmax.studies.compare import compare, write_compare_report


def fake_predictions(root, settings: dict[str, float], seeds=5, n=400, classes=4):
    """Logits whose scale sets how over-confident a setting is: a larger scale, more confident outputs."""
    for setting, scale in settings.items():
        for seed in range(seeds):
            rng = np.random.default_rng(seed)  # the same data for every setting of a seed: paired
            labels = rng.integers(0, classes, n)
            signal = rng.normal(size=(n, classes)) + 1.2 * np.eye(classes)[labels]
            save_predictions(root / setting / f"{seed}.npz", scale * signal[: n // 2], labels[: n // 2],
                             scale * signal[n // 2 :], labels[n // 2 :])


def read_csv(path):
    with open(path, encoding="utf-8", newline="") as handle:
        return list(csv.DictReader(handle))


def test_an_overconfident_reference_is_beaten_and_the_report_opens_with_its_verdict(tmp_path):
    fake_predictions(tmp_path / "preds", {"beta=1": 6.0, "beta=5": 1.5, "beta=0.5": 9.0})
    report = write_compare_report(compare(tmp_path / "preds"), tmp_path / "out").read_text()
    lines = report.splitlines()
    assert lines[2] == "## Verdict"
    verdict = "\n".join(lines[3:8])
    assert "beta=0.5 against beta=1 over 5 seeds: ECE +" in verdict  # more over-confident
    assert "beta=5 against beta=1 over 5 seeds: ECE −" in verdict  # less over-confident
    assert "Temperature scaling of beta=1 (fitted on validation) reaches" in verdict
    assert "Holm families: each column, the 2 setting(s) against beta=1 (k = 2)." in report


def test_every_test_recomputes_from_scores_csv(tmp_path):
    fake_predictions(tmp_path / "preds", {"beta=1": 6.0, "beta=5": 1.5, "beta=20": 0.7})
    write_compare_report(compare(tmp_path / "preds"), tmp_path / "out")
    scores = read_csv(tmp_path / "out" / "scores.csv")
    tests = read_csv(tmp_path / "out" / "comparisons.csv")
    by = {(r["setting"], r["seed"]): r for r in scores}
    for metric in ("ece", "smece", "nll", "brier"):  # accuracy: the same argmax at every scale, undecided
        family = [t for t in tests if t["metric"] == metric and t["against"] == "beta=1"]
        raw = []
        for t in family:
            seeds = sorted(s for (setting, s) in by if setting == t["setting"])
            a = [float(by[(t["setting"], s)][metric]) for s in seeds]
            b = [float(by[("beta=1", s)][metric]) for s in seeds]
            assert float(t["difference"]) == pytest.approx(np.mean(np.subtract(a, b)), rel=1e-12)
            raw.append(stats.ttest_rel(a, b).pvalue)
            assert float(t["p"]) == pytest.approx(raw[-1], rel=1e-9)
        # Holm by hand for a family of two
        low, high = sorted(raw)
        expected = {low: min(1, 2 * low), high: min(1, max(2 * low, high))}
        for t, p in zip(family, raw, strict=True):
            assert float(t["holm_p"]) == pytest.approx(expected[p], rel=1e-9)


def test_fewer_than_three_seeds_are_undecided_never_a_number(tmp_path):
    fake_predictions(tmp_path / "preds", {"beta=1": 6.0, "beta=5": 1.5}, seeds=2)
    report = write_compare_report(compare(tmp_path / "preds"), tmp_path / "out").read_text()
    assert "undecided: fewer than 3 seeds" in report
    assert "not significant" not in report


@pytest.mark.parametrize(("layout", "message"), [
    ("no_reference", "has no folder 'beta=1' to compare with"),
    ("missing_array", "lacks ['test_labels']"),
    ("empty", "holds no SETTING/SEED.npz files"),
    ("no_common_seed", "shares no seed (file name) with"),
])
def test_bad_folders_are_one_line_naming_the_fix(tmp_path, capsys, layout, message):
    root = tmp_path / "preds"
    root.mkdir()
    if layout == "no_reference":
        fake_predictions(root, {"beta=2": 1.0}, seeds=1)
    elif layout == "missing_array":
        fake_predictions(root, {"beta=1": 1.0}, seeds=1)
        np.savez(root / "beta=1" / "1.npz", val_logits=np.zeros((2, 2)), val_labels=np.zeros(2, int),
                 test_logits=np.zeros((2, 2)))
    elif layout == "no_common_seed":
        fake_predictions(root, {"beta=1": 1.0}, seeds=1)
        fake_predictions(root, {"beta=2": 1.0}, seeds=2)
        (root / "beta=2" / "0.npz").unlink()
    assert main(["compare", str(root), "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err.strip()
    assert message in err
    assert "\n" not in err
    assert not (tmp_path / "out").exists()


def test_compare_on_the_engines_runs_gives_the_reports_numbers(tmp_path, capsys):
    """The same runs laid out as SETTING/SEED.npz: compare's ECE (15 bins) and accuracy are the report's."""
    config = tmp_path / "c.toml"
    config.write_text('name = "c"\n[data]\nval_size = 300\n[model]\noptions = { hidden = [16] }\n[train]\nepochs = 3\n'
                      'lr = 0.05\nrecord_epochs = [3]\n[sweep]\n"loss.beta" = [1.0, 5.0]\nseed = [0, 1, 2]\n')
    assert main(["sweep", str(config), "--out", str(tmp_path / "runs"), "--no-progress"]) == 0
    for run in (tmp_path / "runs" / "c").iterdir():
        if run.is_dir():
            setting, seed = run.name.split("_seed=")
            (tmp_path / "preds" / setting).mkdir(parents=True, exist_ok=True)
            shutil.copy(run / "predictions.npz", tmp_path / "preds" / setting / f"{seed}.npz")
    assert main(["compare", str(tmp_path / "preds"), "--out", str(tmp_path / "out")]) == 0
    assert main(["report", str(tmp_path / "runs" / "c"), "--out", str(tmp_path / "report"), "--bins", "15"]) == 0
    runs = read_csv(tmp_path / "report" / "runs.csv")
    scores = {(r["setting"], r["seed"]): r for r in read_csv(tmp_path / "out" / "scores.csv")}
    for run in runs:
        ours = scores[(run["group"], run["seed"])]
        assert float(ours["ece"]) == pytest.approx(float(run["test ece"]), rel=1e-12)
        assert float(ours["accuracy"]) == pytest.approx(float(run["test accuracy"]), rel=1e-12)
        assert float(ours["ts ece"]) == pytest.approx(float(run["temperature ece"]), rel=1e-6)
    assert not math.isnan(float(read_csv(tmp_path / "out" / "comparisons.csv")[0]["difference"]))
