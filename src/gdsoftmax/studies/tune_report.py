"""The report of a ``gdsoftmax tune`` study (``report.md`` beside its ``trials.csv`` and ``best.toml``): its
verdict first (the chosen trial beside β = 1's own validation objective, and the seeded comparison that decides),
every trial with its difference from β = 1, the objective against β, and the chosen setting's test metrics,
reported once.

The search reads only the validation split; the test split is read here, for the chosen run alone.
"""

from __future__ import annotations

import csv
import json
import math
import shlex
from pathlib import Path

import torch

from gdsoftmax.analysis import plots
from gdsoftmax.analysis.binned import ECE_BINS
from gdsoftmax.analysis.files import write_text_atomically
from gdsoftmax.analysis.metrics import calibration_metrics
from gdsoftmax.engine.rundir.view import RunView
from gdsoftmax.studies.markdown import markdown_table

__all__ = ["build_tune_report", "confirmation_commands", "searched_keys"]

N_BINS = ECE_BINS
HIGHER_IS_BETTER = ("val_accuracy",)


def _trials(root: Path) -> list[dict]:
    with open(root / "trials.csv", encoding="utf-8", newline="") as handle:
        return list(csv.DictReader(handle))


def searched_keys(trials: list[dict]) -> list[str]:
    """The config keys a study searched, from its trials.csv rows."""
    fixed = ("number", "state", "run", "val_accuracy", "val_nll", "val_ece", "feasible", "best")
    return [k for k in trials[0] if k not in fixed] if trials else []


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
    keys = searched_keys(trials)
    chosen = next((t for t in trials if t["best"] == "yes"), None)
    if chosen is None:
        raise ValueError(f"{root}/trials.csv marks no best trial; rerun gdsoftmax tune")
    test = _test_metrics(root / chosen["run"])
    reference = _reference(root)
    base = reference.get(objective) if reference else None
    rows = [[t["number"], t["state"].lower(), *(_short(t[k]) for k in keys),
             *(f"{_number(t[v]):.4f}" if t[v] else "—" for v in ("val_accuracy", "val_nll", "val_ece")),
             _versus(_number(t[objective]), base), {"True": "yes", "False": "no"}.get(t["feasible"], "—")]
            for t in trials]
    counts = {s: sum(t["state"] == s for t in trials) for s in ("COMPLETE", "PRUNED", "FAIL")}
    lines = [f"# Tuning: {root.name}", "", "## Verdict", "",
             *_verdict(chosen, keys, objective, base, len(trials), root), "",
             f"Objective: **{objective}** on the validation split (never the test split). {len(trials)} trials: "
             f"{counts['COMPLETE']} complete, {counts['PRUNED']} pruned by the median rule, {counts['FAIL']} failed "
             "(a stopped worker's trial fails and is enqueued again).", ""]
    if reference:
        lines += [f"Reference run (β = 1, `reference/`): validation accuracy {100 * reference['val_accuracy']:.2f} %, "
                  f"NLL {reference['val_nll']:.4f}, ECE ({N_BINS} bins) {100 * reference['val_ece']:.2f} %"
                  + (f"; a trial is feasible when its validation accuracy is at least "
                     f"{100 * (reference['val_accuracy'] - max_accuracy_drop):.2f} %." if objective == "val_ece"
                     else "."), ""]
    if command:
        lines += ["Made with:", "", "```", command, "```", ""]
    header = ["trial", "state", *keys, "val acc", "val NLL", f"val ECE ({N_BINS} bins)", f"{objective} − β = 1",
              "feasible"]
    lines += ["## Trials", "", markdown_table(header, rows), ""]
    figure = _objective_figure(trials, keys, objective, root / "objective.png", base)
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
    return write_text_atomically(root / "report.md", "\n".join(lines))


def _reference(root: Path) -> dict[str, float] | None:
    """β = 1's validation values, as the study wrote them (None for a study made before it wrote them)."""
    path = root / "reference.json"
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else None


def _beats(value: float, base: float, objective: str) -> bool:
    """Whether a trial's value is better than β = 1's (a diverged β = 1 is beaten by any finite value)."""
    if math.isnan(base):
        return not math.isnan(value)
    return value > base if objective in HIGHER_IS_BETTER else value < base


def _objective_of(root: Path) -> str | None:
    return (_reference(root) or {}).get("objective")


def _versus(value: float, base: float | None) -> str:
    if base is None or math.isnan(value):
        return "—"
    return f"{value - base:+.4f}".replace("-", "−")


def confirmation_commands(root: Path, keys: list[str] | None = None, chosen: dict | None = None) -> list[str]:
    """The seeded comparison that decides: the chosen setting and β = 1 over five seeds, then their report
    (``keys`` and the ``chosen`` row default to those of ``root/trials.csv``, and then none is needed where the
    chosen trial did not beat β = 1's own validation value)."""
    if chosen is None:
        trials = _trials(root)
        keys, chosen = searched_keys(trials), next(t for t in trials if t["best"] == "yes")
        objective, base = _objective_of(root), (_reference(root) or {})
        if objective and objective in base and not _beats(_number(chosen[objective]), base[objective], objective):
            return []
    out = root.parent / "confirm"
    grid = (f" --set 'sweep.loss.beta=[1.0, {_short(chosen['loss.beta'])}]'" if "loss.beta" in keys else "")
    return [f"gdsoftmax sweep {shlex.quote(str(root / 'best.toml'))}{grid} --set 'sweep.seed=[0, 1, 2, 3, 4]' "
            f"--out {shlex.quote(str(out))}", f"gdsoftmax report {shlex.quote(str(out / root.name))}"]


def _verdict(chosen: dict, keys: list[str], objective: str, base: float | None, n: int, root: Path) -> list[str]:
    setting = ", ".join(f"{k} = {_short(chosen[k])}" for k in keys)
    value = _number(chosen[objective])
    if base is None:
        return [f"Trial {chosen['number']} ({setting}) is the best of {n} on {objective} ({value:.4f}); this study "
                "has no β = 1 reference to set it beside (rerun `gdsoftmax tune` to train one)."]
    better = _beats(value, base, objective)
    if math.isnan(base):
        return [f"β = 1 diverged here (its reference run's loss became NaN); trial {chosen['number']} ({setting}) "
                f"has the best {objective} of {n}, {value:.4f}. Confirm over seeds: `"
                + "`, then `".join(confirmation_commands(root, keys, chosen)) + "`."]
    if not better:
        return [f"No trial beat β = 1 on {objective} (β = 1: {base:.4f}; the best trial, {setting}: {value:.4f}): "
                "no reason from this search to change β."]
    commands = confirmation_commands(root, keys, chosen)
    return [f"Trial {chosen['number']} ({setting}) has the best {objective} of {n} trials, {value:.4f} against "
            f"β = 1's {base:.4f} ({_versus(value, base)}). Each trial is one seed on the validation split, so this is "
            "a candidate, not a verdict: compare it with β = 1 over seeds, `" + commands[0] + "`, then `"
            + commands[1] + "`, whose report's verdict decides."]


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


def _objective_figure(trials: list[dict], keys: list[str], objective: str, path: Path,
                      reference: float | None = None) -> Path | None:
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
    if reference is not None:
        ax.axhline(reference, color="black", linestyle="--", linewidth=1, label=f"β = 1 (reference): {reference:.4f}")
    every = [x for values in kinds.values() for x, _ in values]
    if min(every) > 0:
        from matplotlib import ticker  # loaded with pyplot above

        ax.set_xscale("log")
        ax.xaxis.set_major_locator(ticker.LogLocator(subs=(1.0, 2.0, 5.0)))  # a few labelled values per decade
        ax.xaxis.set_major_formatter(ticker.FuncFormatter(lambda v, _: f"{v:g}"))
        ax.xaxis.set_minor_formatter(ticker.NullFormatter())
    ax.set(xlabel=keys[0], ylabel=f"{objective} (validation split)",
           title=f"{objective} of each trial against {keys[0]}")
    ax.legend(fontsize=7)
    return plots.save_figure(fig, path)
