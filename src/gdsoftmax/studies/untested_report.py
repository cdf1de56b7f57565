"""``gdsoftmax study KIND SWEEP_DIR``: the report of one of the studies in
:mod:`gdsoftmax.studies.untested_claims` (``report.md``, its figure, ``runs.csv`` and ``claims.csv``).

The runs are measured as a sweep report measures them (:func:`gdsoftmax.studies.measures.measure`, here
with 15 bins), plus two values these studies need: the training accuracy of the last epoch and the
oscillation of test accuracy (the standard deviation of its epoch-to-epoch changes over the second
half of training).
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from gdsoftmax.analysis import plots
from gdsoftmax.analysis.binned import ECE_BINS
from gdsoftmax.analysis.files import write_text_atomically
from gdsoftmax.analysis.paper_claims import claim_by_id
from gdsoftmax.engine.rundir.view import failed_runs
from gdsoftmax.studies.bottom_line import claims_verdict
from gdsoftmax.studies.factorial import regime_line
from gdsoftmax.studies.markdown import markdown_table
from gdsoftmax.studies.measures import measure
from gdsoftmax.studies.registry import STUDIES
from gdsoftmax.studies.report import runs_to_know_about
from gdsoftmax.studies.run_table import RunRow, swept_keys, write_runs_csv
from gdsoftmax.studies.runs import Run, load_runs
from gdsoftmax.studies.untested_claims import ANALYSES, TARGET_ACCURACY
from gdsoftmax.studies.verdicts import write_verdicts

__all__ = ["STUDY_CLAIMS", "build_study", "oscillation"]

N_BINS = ECE_BINS
# the registry names each kind's claim and title (gdsoftmax.studies.registry)
STUDY_CLAIMS = {kind: STUDIES[kind].claims[0] for kind in ANALYSES}
TITLES = {kind: STUDIES[kind].title for kind in ANALYSES}


def oscillation(test_accuracy: list[float]) -> float:
    """Standard deviation of the epoch-to-epoch changes of test accuracy over the second half of training.

    >>> round(oscillation([0.5, 0.6, 0.7, 0.8, 0.7, 0.8, 0.7]), 3)  # changes -0.1, +0.1, -0.1 from epoch 4 on
    0.115
    """
    tail = np.asarray(test_accuracy[len(test_accuracy) // 2:], dtype=np.float64)
    steps = np.diff(tail)
    return float(steps.std(ddof=1)) if len(steps) > 1 else math.nan


def _measured(sweep_dir: Path) -> list[Run]:
    runs = load_runs(sweep_dir)
    data_sets = sorted({run.config.data.dataset for run in runs})
    if len(data_sets) > 1:
        raise ValueError(f"the runs under {sweep_dir} were trained on different data sets ({', '.join(data_sets)}); "
                         "a study reads one")
    for run in runs:
        measure(run, N_BINS)
        run.metrics.diverged = 0.0
        run.metrics.epochs_to_target = _epochs_to_target(run)
        run.metrics.oscillation = oscillation([row["test_acc"] for row in run.rows])
    return runs


def _epochs_to_target(run: Run) -> float:
    return next((float(row["epoch"]) for row in run.rows if row["test_acc"] >= TARGET_ACCURACY), math.nan)


def _diverged(sweep_dir: Path) -> list[Run]:
    """The runs whose loss became non-finite, as runs with no test result."""
    runs = []
    for view in failed_runs(sweep_dir):
        run = Run(view.path, view.config(), view.rows(), {}, {})
        if "TrainingDiverged" in (view.failure() or ""):
            run.metrics.diverged, run.metrics.test_accuracy = 1.0, math.nan
            run.metrics.epochs_to_target = _epochs_to_target(run)
            runs.append(run)
    return runs


def build_study(kind: str, sweep_dir: str | Path, out_dir: str | Path, *, command: str = "") -> Path:
    """Write the study's report into ``out_dir``; the path of ``report.md``."""
    if kind not in ANALYSES:
        raise ValueError(f"unknown study {kind!r}; the studies are: {', '.join(ANALYSES)}")
    sweep_dir, out = Path(sweep_dir), Path(out_dir)
    runs = _measured(sweep_dir)
    stopped = _diverged(sweep_dir) if kind == "lr" else []  # a diverged run is this study's result
    swept = swept_keys(runs + stopped)
    rows = [RunRow.of(run, run.setting, swept) for run in runs + stopped]
    sections, verdicts = ANALYSES[kind](rows)
    out.mkdir(parents=True, exist_ok=True)
    figure = _FIGURES[kind](runs, out / f"{kind}.png")
    preamble = _preamble(kind, sweep_dir, runs, rows, command)
    lines = [*preamble[:2], "## Verdict", "", *claims_verdict(verdicts), "", *preamble[2:], *sections]
    lines += [f"![{TITLES[kind]}]({figure.name})", "", *_claims(verdicts), *_compute(runs)]
    write_runs_csv(out / "runs.csv", rows)
    write_verdicts(out / "claims.csv", verdicts)
    return write_text_atomically(out / "report.md", "\n".join(lines))


def _preamble(kind: str, sweep_dir: Path, runs: list[Run], rows: list[RunRow], command: str) -> list[str]:
    first = runs[0].config
    claim = claim_by_id(STUDY_CLAIMS[kind])
    finished = [r for r in rows if not r.metrics.get("diverged")]
    reference = [r for r in finished if r.group == "ce"] or [r for r in finished if r.constant_beta == 1.0]
    train = first.train
    schedule = train.schedule_text()
    swept = swept_keys(runs)
    optimizer = "SGD (momentum swept)" if "train.momentum" in swept else train.optimizer_text()
    rate = "swept" if "train.lr" in swept else f"{train.lr:g}"
    lines = [f"# {TITLES[kind]}", "",
             f"The claim (`{claim.id}`), in our words: {claim.says} ({'; '.join(s.cite() for s in claim.sources)}).",
             "", f"**Runs:** {len(runs)} on {first.data.dataset} (its test split), model {first.model.name}, "
             f"{train.epochs} epochs, {optimizer}, lr {rate} ({schedule}), weight decay {train.weight_decay:g}, "
             f"gradient clipping at {train.grad_clip:g}, batch {train.batch_size}; swept: "
             f"{', '.join(swept)}; seeds {', '.join(str(s) for s in sorted({r.seed for r in rows}))}. "
             f"ECE uses {N_BINS} equal-width bins.",
             "", f"**Regime of the baseline** (β = 1 or CE, all its finished runs): {regime_line(reference)}.", "",
             "Every number here is our measurement; `runs.csv` beside this report holds the per-run values the "
             "verdicts are computed from, `claims.csv` the verdicts (read by `gdsoftmax claims`).", ""]
    lines += runs_to_know_about(sweep_dir, runs)
    if command:
        lines += ["Regenerate with:", "", "```", command, "```", ""]
    return lines


def _claims(verdicts) -> list[str]:
    return ["## Claims", "",
            "The rows the claims ledger reads: *confirmed* when Δ has the claimed sign with a Holm-corrected "
            "p < 0.05, *refuted* when it has the other sign with a corrected p < 0.05, otherwise *inconclusive*.", "",
            markdown_table(["claim", "comparison", "ours", "baseline", "Δ [95 % CI]", "d_z", "p", "Holm p",
                            "Holm family", "verdict"], [v.cells() for v in verdicts]), ""]


def _compute(runs: list[Run]) -> list[str]:
    minutes = sum(r.training_seconds for r in runs if not math.isnan(r.training_seconds)) / 60
    return ["## Compute", "", f"{minutes:.1f} minutes of training in all (a stacked group's time split among its "
            "runs), on the CPU the runs record.", ""]


# ---- figures --------------------------------------------------------------------------------------------

def _curves_by(runs: list[Run], panel_of, line_of) -> dict:
    panels: dict = {}
    for run in runs:
        panels.setdefault(panel_of(run), {}).setdefault(line_of(run), []).append(
            [100 * row["test_acc"] for row in run.rows])
    return panels


def _accuracy_curves(runs: list[Run], path: Path, panel_of, line_of, title: str, panel_title) -> Path:
    plt = plots.pyplot()
    panels = _curves_by(runs, panel_of, line_of)
    fig, axes = plt.subplots(1, len(panels), figsize=(5.5 * len(panels), 4), squeeze=False)
    ordered = sorted(panels.items(), key=lambda kv: str(kv[0]))
    labels = list(dict.fromkeys(label for _, lines in ordered for label in lines))
    colors = dict(zip(labels, plots.palette(len(labels)), strict=True))  # one colour per line label in every panel
    for ax, (panel, lines) in zip(axes[0], ordered, strict=True):
        for label, curves in lines.items():
            plots.band(ax, np.arange(1, len(curves[0]) + 1), curves, colors[label], label)
        ax.set(xlabel="epoch", ylabel="test accuracy (%)", title=panel_title(panel))
        ax.legend(fontsize=7)
    fig.suptitle(title + " (mean over seeds; band: min–max)")
    return plots.save_figure(fig, path)


def _oscillation_figure(runs: list[Run], path: Path) -> Path:
    return _accuracy_curves(runs, path, lambda r: r.config.train.momentum, lambda r: r.label,
                            "Test accuracy along training", lambda m: f"momentum {m:g}")


def _warmup_figure(runs: list[Run], path: Path) -> Path:
    return _accuracy_curves(runs, path, lambda r: "all", lambda r: r.setting, "Test accuracy along training",
                            lambda _: "warm-up, A-Softmax, Center loss and CE")


def _against(runs: list[Run], path: Path, x_of, line_of, metrics, xlabel: str, title: str) -> Path:
    plt = plots.pyplot()
    fig, axes = plt.subplots(1, len(metrics), figsize=(5 * len(metrics), 4), squeeze=False)
    lines: dict = {}
    for run in runs:
        lines.setdefault(line_of(run), {}).setdefault(x_of(run), []).append(run.metrics)
    for ax, (metric, name, scale) in zip(axes[0], metrics, strict=True):
        for (label, points), color in zip(sorted(lines.items()), plots.palette(len(lines)), strict=True):
            xs = sorted(points)
            values = [[scale * v[metric] for v in points[x]] for x in xs]
            ax.errorbar(xs, [np.mean(v) for v in values], yerr=[np.std(v, ddof=1) if len(v) > 1 else 0 for v in values],
                        marker="o", capsize=3, color=color, label=label)
        ticks = sorted({x for points in lines.values() for x in points})
        # Label the swept values themselves: matplotlib's log minor labels collide between 3 and 4.
        ax.set(xscale="log", xlabel=xlabel, ylabel=name, title=name,
               xticks=ticks, xticklabels=[f"{t:g}" for t in ticks])
        ax.minorticks_off()
        ax.legend(fontsize=7)
    fig.suptitle(title + " (mean ± std over seeds)")
    return plots.save_figure(fig, path)


def _tau_figure(runs: list[Run], path: Path) -> Path:
    metrics = (("test accuracy", "test accuracy (%)", 100), ("overconfidence", "confidence − accuracy (points)", 100),
               ("test ece", f"ECE (%, {N_BINS} bins)", 100))
    return _against(runs, path, lambda r: r.config.loss.tau, lambda r: r.config.loss.beta.describe(),
                    metrics, "τ", "Test metrics against the temperature τ")


def _capacity_figure(runs: list[Run], path: Path) -> Path:
    metrics = (("test accuracy", "test accuracy (%)", 100), ("train accuracy", "training accuracy (%)", 100))
    return _against(runs, path, lambda r: r.config.model.options["hidden"][0],
                    lambda r: r.config.loss.beta.describe(), metrics, "width of each hidden layer",
                    "Accuracy against width")


def _lr_figure(runs: list[Run], path: Path) -> Path:
    return _accuracy_curves(runs, path, lambda r: r.config.loss.beta.describe(symbol=False),
                            lambda r: f"lr {r.config.train.lr:g}", "Test accuracy along training",
                            lambda beta: f"β = {beta}")


_FIGURES = {"oscillation": _oscillation_figure, "tau": _tau_figure, "capacity": _capacity_figure,
            "warmup-margin": _warmup_figure, "lr": _lr_figure}
