"""The report of a ``gdsoftmax tune`` study (``report.md`` beside its ``trials.csv`` and ``best.toml``):
every trial, the objective against β, and the chosen setting with its test metrics, reported once.

The search reads only the validation split; the test split is read here, for the chosen run alone.
"""

from __future__ import annotations

import csv
import math
from pathlib import Path

import numpy as np
import torch

from gdsoftmax.analysis import plots
from gdsoftmax.analysis.metrics import calibration_metrics
from gdsoftmax.engine.rundir.view import RunView
from gdsoftmax.studies.markdown import markdown_table

__all__ = ["build_tune_report"]

N_BINS = 15


def _trials(root: Path) -> list[dict]:
    with open(root / "trials.csv", encoding="utf-8", newline="") as handle:
        return list(csv.DictReader(handle))


def _number(text: str) -> float:
    try:
        return float(text)
    except ValueError:
        return math.nan


def build_tune_report(root: str | Path, objective: str, command: str = "", max_accuracy_drop: float = 0.0) -> Path:
    """Write ``root/report.md`` and its figure from ``trials.csv`` (its ``best`` column marks the chosen
    trial, whose parameters ``best.toml`` holds) and the chosen run."""
    root = Path(root)
    trials = _trials(root)
    keys = [k for k in trials[0] if k not in ("number", "state", "run", "val_accuracy", "val_nll", "val_ece",
                                              "feasible", "best")] if trials else []
    chosen = next((t for t in trials if t["best"] == "yes"), None)
    if chosen is None:
        raise ValueError(f"{root}/trials.csv marks no best trial; rerun gdsoftmax tune")
    test = _test_metrics(root / chosen["run"])
    rows = [[t["number"], t["state"].lower(), *(_short(t[k]) for k in keys),
             *(f"{_number(t[v]):.4f}" if t[v] else "—" for v in ("val_accuracy", "val_nll", "val_ece")),
             {"True": "yes", "False": "no"}.get(t["feasible"], "—")] for t in trials]
    counts = {s: sum(t["state"] == s for t in trials) for s in ("COMPLETE", "PRUNED", "FAIL")}
    lines = [f"# Tuning: {root.name}", "",
             f"Objective: **{objective}** on the validation split (never the test split). {len(trials)} trials: "
             f"{counts['COMPLETE']} complete, {counts['PRUNED']} pruned by the median rule, {counts['FAIL']} failed "
             "(a stopped worker's trial fails and is enqueued again).", ""]
    if (root / "reference" / "predictions.npz").exists():
        reference = _validation_accuracy(root / "reference")
        lines += [f"Reference run (β = 1, `reference/`): validation accuracy {100 * reference:.2f} %; a trial is "
                  f"feasible when its validation accuracy is at least {100 * (reference - max_accuracy_drop):.2f} %.",
                  ""]
    if command:
        lines += ["Made with:", "", "```", command, "```", ""]
    header = ["trial", "state", *keys, "val acc", "val NLL", f"val ECE ({N_BINS} bins)", "feasible"]
    lines += ["## Trials", "", markdown_table(header, rows), ""]
    figure = _objective_figure(trials, keys, objective, root / "objective.png")
    if figure:
        lines += [f"![The objective against {keys[0]}]({figure.name})", ""]
    lines += ["## The chosen setting", "",
              f"Trial {chosen['number']} ({chosen['run']}): " + ", ".join(f"{k} = {_short(chosen[k])}" for k in keys)
              + f". `best.toml` beside this report trains it with `gdsoftmax train {root / 'best.toml'}`.", "",
              f"Its test metrics, read once, after the search: accuracy {100 * test.accuracy:.2f} %, ECE ({N_BINS} "
              f"bins) {100 * test.ece:.2f} %, NLL {test.nll:.4f}. One seed: to compare it with β = 1, train both "
              "over several seeds (a sweep) and report them.", ""]
    path = root / "report.md"
    temporary = root / ".report.md.tmp"
    temporary.write_text("\n".join(lines), encoding="utf-8")
    temporary.replace(path)
    return path


def _short(text: str) -> str:
    value = _number(text)
    return f"{value:.4g}" if not math.isnan(value) else text


def _validation_accuracy(run_dir: Path) -> float:
    predictions = RunView(run_dir).predictions()
    return float((predictions["val_logits"].argmax(1) == predictions["val_labels"]).mean())


def _test_metrics(run_dir: Path):
    predictions = RunView(run_dir).predictions()
    return calibration_metrics(torch.from_numpy(predictions["test_logits"]).double(),
                               torch.from_numpy(predictions["test_labels"]), N_BINS)


def _objective_figure(trials: list[dict], keys: list[str], objective: str, path: Path) -> Path | None:
    points = [(_number(t[keys[0]]), _number(t[objective]), t["state"]) for t in trials if keys]
    points = [p for p in points if not math.isnan(p[0]) and not math.isnan(p[1])]
    if not points:
        return None
    plt = plots.pyplot()
    fig, ax = plt.subplots(figsize=(6, 4))
    for state, marker in (("COMPLETE", "o"), ("PRUNED", "x")):
        chosen = np.array([(x, y) for x, y, s in points if s == state])
        if len(chosen):
            ax.scatter(chosen[:, 0], chosen[:, 1], marker=marker, label=state.lower())
    ax.set(xscale="log" if min(p[0] for p in points) > 0 else "linear", xlabel=keys[0], ylabel=objective,
           title=f"{objective} of each trial against {keys[0]}")
    ax.legend(fontsize=7)
    return plots.save_figure(fig, path)
