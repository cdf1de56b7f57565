"""The per-run metrics' typed row and its vocabulary: names refused where they are read, one type for every value,
and runs.csv and paper_claims.toml held to the vocabulary."""

import csv
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from gdsoftmax.analysis import paper_claims
from gdsoftmax.analysis.run_metrics import CSV_METRICS, METRICS, RunMetrics
from gdsoftmax.studies.run_table import COUNT_PREFIX, FIXED_COLUMNS, SWEPT_PREFIX, RunRow, read_runs_csv, write_runs_csv

RESULTS = Path(__file__).resolve().parents[2] / "docs" / "results"


def test_a_name_outside_the_vocabulary_is_refused_wherever_it_is_read():
    row = RunMetrics(test_ece=0.1)
    for read in (lambda: row["test ECE"], lambda: "test ECE" in row, lambda: row.get("test ECE"),
                 lambda: row.__setitem__("test ECE", 0.2), lambda: RunMetrics.of({"effect": 1.0})):
        with pytest.raises(KeyError, match=r"unknown metric .*; the metrics are: test accuracy, test ece"):
            read()


def test_a_misspelt_attribute_is_an_error_not_a_new_field():
    with pytest.raises(AttributeError):
        RunMetrics().test_eec = 0.1


def test_an_unmeasured_metric_is_absent_and_a_measured_nan_is_present():
    row = RunMetrics(test_accuracy=math.nan)
    assert "test accuracy" in row
    assert math.isnan(row["test accuracy"])
    assert not row.finite("test accuracy")
    assert "test ece" not in row
    assert row.get("test ece") is None
    assert row.get("test ece", -1.0) == -1.0
    with pytest.raises(KeyError, match="'test ece' was not measured on this run"):
        row["test ece"]


@pytest.mark.parametrize("value", [np.float32(0.25), np.float64(0.25), torch.tensor(0.25), 1, True])
def test_every_metric_is_held_as_a_python_float(value):
    row = RunMetrics()
    row.test_ece = value
    row["T"] = value
    assert type(row.test_ece) is float
    assert type(row.fitted_temperature) is float
    assert row.test_ece == float(value)


def test_items_follow_the_vocabulary_and_in_csv_keeps_the_runs_csv_metrics():
    row = RunMetrics.of({"vector mce": 0.3, "T": 1.5, "test accuracy": 0.9})
    assert list(row.items()) == [("test accuracy", 0.9), ("T", 1.5), ("vector mce", 0.3)]
    assert list(row.in_csv().items()) == [("test accuracy", 0.9), ("T", 1.5)]
    assert "vector mce" in METRICS
    assert "vector mce" not in CSV_METRICS


def test_runs_csv_keeps_nan_and_absence_apart(tmp_path):
    metrics = RunMetrics.of({"test accuracy": math.nan, "diverged": 1.0})
    rows = [RunRow("a", "g", "β = 1", 1.0, False, 0, metrics),
            RunRow("b", "g", "β = 1", 1.0, False, 1, RunMetrics.of({"diverged": 0.0, "test ece": 0.125}))]
    write_runs_csv(tmp_path / "runs.csv", rows)
    back = read_runs_csv(tmp_path / "runs.csv")
    assert math.isnan(back[0].metrics.test_accuracy)
    assert back[0].metrics.test_ece is None
    assert back[1].metrics.test_accuracy is None
    assert back[1].metrics.test_ece == 0.125
    header = (tmp_path / "runs.csv").read_text().splitlines()[0].split(",")
    assert header[len(FIXED_COLUMNS):] == ["test accuracy", "test ece", "diverged"]  # the vocabulary's order


def _metric_columns(path: Path) -> list[str]:
    with open(path, encoding="utf-8", newline="") as handle:
        header = next(csv.reader(handle))
    return [c for c in header if c not in FIXED_COLUMNS and not c.startswith((SWEPT_PREFIX, COUNT_PREFIX))]


@pytest.mark.parametrize("runs_csv", sorted(RESULTS.glob("*/runs.csv")), ids=lambda p: p.parent.name)
def test_every_committed_runs_csv_column_is_a_metric_of_the_vocabulary(runs_csv):
    # a column outside it would be dropped on reading, and the verdicts recomputed without it
    columns = _metric_columns(runs_csv)
    assert set(columns) <= set(CSV_METRICS), sorted(set(columns) - set(CSV_METRICS))
    assert columns == [c for c in CSV_METRICS if c in columns]


def test_a_claim_whose_test_names_no_runs_csv_metric_is_refused_on_loading():
    record = {"id": "x", "says": "s", "kind": "empirical", "sources": [], "made_on": [],
              "test": {"metric": "test ECE", "applies": "large", "direction": -1}}
    with pytest.raises(ValueError, match=r"test metric .test ECE. is not a per-run metric runs\.csv holds"):
        paper_claims._claim(record)
    record["test"] = {"metric": "test ece", "applies": "large", "direction": -1, "baseline": "vector mce"}
    with pytest.raises(ValueError, match=r"'vector mce' is not a per-run metric runs\.csv holds"):
        paper_claims._claim(record)
    record["test"]["baseline"] = "temperature ece"
    assert paper_claims._claim(record).test.baseline_metric == "temperature ece"
