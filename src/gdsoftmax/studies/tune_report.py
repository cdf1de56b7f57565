"""The report of a ``gdsoftmax tune`` study (``report.md`` beside its ``trials.csv`` and ``best.toml``):
every trial, the objective against β, and the chosen setting with its test metrics, reported once.

The search reads only the validation split; the test split is read here, for the chosen run alone.
"""

from __future__ import annotations

import csv
import math
from pathlib import Path

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
              ("A text corpus has no test split: the validation values above are all there is."
               if test is None else
               f"Its test metrics, read once, after the search: accuracy {100 * test.accuracy:.2f} %, ECE ({N_BINS} "
               f"bins) {100 * test.ece:.2f} %, NLL {test.nll:.4f}.") + " One seed: to compare it with β = 1, train "
              "both over several seeds (a sweep) and report them.", ""]
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
    if "val_logits" not in predictions:  # a language model: per-token correctness
        return float(predictions["val_correct"].mean())
    return float((predictions["val_logits"].argmax(1) == predictions["val_labels"]).mean())


def _test_metrics(run_dir: Path):
    """The test split's metrics; None for a text corpus, which has none."""
    predictions = RunView(run_dir).predictions()
    if "test_logits" not in predictions:
        return None
    return calibration_metrics(torch.from_numpy(predictions["test_logits"]).double(),
                               torch.from_numpy(predictions["test_labels"]), N_BINS)


def _objective_figure(trials: list[dict], keys: list[str], objective: str, path: Path) -> Path | None:
    """The objective of each complete trial against the first searched key: feasible and infeasible trials
    apart, the chosen one ringed, and the pruned trials' values as ticks along the bottom."""
    if not keys:
        return None
    kinds = {"feasible": [], "infeasible": [], "pruned": [], "chosen": []}
    for t in trials:
        x, y = _number(t[keys[0]]), _number(t[objective])
        if math.isnan(x):
            continue
        if t["state"] == "PRUNED":
            kinds["pruned"].append((x, math.nan))
        elif not math.isnan(y):
            kinds["infeasible" if t.get("feasible") == "False" else "feasible"].append((x, y))
            if t.get("best") == "yes":
                kinds["chosen"].append((x, y))
    if not kinds["feasible"] + kinds["infeasible"]:
        return None
    plt = plots.pyplot()
    fig, ax = plt.subplots(figsize=(6.5, 4))
    styles = {"feasible": {"marker": "o", "color": "tab:blue"}, "infeasible": {"marker": "s", "color": "tab:gray"},
              "chosen": {"marker": "o", "s": 160, "facecolors": "none", "edgecolors": "tab:red"}}
    for kind, style in styles.items():
        if kinds[kind]:
            xs, ys = zip(*kinds[kind], strict=True)
            ax.scatter(xs, ys, label=kind if kind != "infeasible" else "infeasible (accuracy too low)", **style)
    if kinds["pruned"]:
        ax.plot([x for x, _ in kinds["pruned"]], [0.02] * len(kinds["pruned"]), "|", color="tab:orange", ms=14,
                transform=ax.get_xaxis_transform(), label="pruned (value of its key)")
    every = [x for values in kinds.values() for x, _ in values]
    if min(every) > 0:
        from matplotlib import ticker  # loaded with pyplot above

        ax.set_xscale("log")
        ax.xaxis.set_major_formatter(ticker.FuncFormatter(lambda v, _: f"{v:g}"))
        ax.xaxis.set_minor_formatter(ticker.NullFormatter())
    ax.set(xlabel=keys[0], ylabel=f"{objective} (validation split)",
           title=f"{objective} of each trial against {keys[0]}")
    ax.legend(fontsize=7)
    return plots.save_figure(fig, path)
