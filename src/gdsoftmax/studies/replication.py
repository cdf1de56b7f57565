"""``gdsoftmax study replication``: the calibration claims in one over-confident setting, against the toolbox a
practitioner would reach for instead.

A setting is one (data set, model, recipe) sweep of β ∈ {1, 2, 5, 10, 20, 50} beside label smoothing 0.1 and focal
loss with the FLSD-53 schedule, every one over the same seeds (``configs/replication/``). Each run is scored on the
test split raw and after temperature scaling fitted on its own validation split (:func:`gdsoftmax.studies.compare.
score`: accuracy, ECE at 15 bins, smECE, NLL, Brier), and β = 1's temperature-scaled scores are the toolbox's
post-hoc entry. Whether the setting is in the regime the calibration claims speak of is read from β = 1's
*validation* split (mean confidence − accuracy), never from the test split the claims are then tested on.

The report opens with that regime and the verdict; its ``runs.csv`` holds every value the verdicts rest on, and its
``claims.csv`` the registered claims' verdicts (:func:`gdsoftmax.studies.claims.claims_verdicts`), so both recompute
from ``runs.csv`` alone.
"""

from __future__ import annotations

import math
from pathlib import Path

import torch

from gdsoftmax.analysis.files import write_text_atomically
from gdsoftmax.analysis.margins import logit_margins
from gdsoftmax.analysis.metrics import calibration_metrics
from gdsoftmax.analysis.paper_claims import REGIME_THRESHOLD
from gdsoftmax.analysis.run_metrics import RunMetrics
from gdsoftmax.analysis.stats import format_mean_std, holm, mean_std, paired_comparison
from gdsoftmax.engine.rundir.view import RunView
from gdsoftmax.studies.bottom_line import claims_verdict
from gdsoftmax.studies.claims import Families, claims_verdicts, group_rows
from gdsoftmax.studies.compare import score
from gdsoftmax.studies.markdown import markdown_table
from gdsoftmax.studies.report import claims_section
from gdsoftmax.studies.run_table import RunRow, write_runs_csv
from gdsoftmax.studies.runs import Run, load_runs
from gdsoftmax.studies.verdicts import write_verdicts

__all__ = ["TOOLBOX", "build_replication_study", "measure_replication", "toolbox_tests"]

# compare.score's keys -> the runs.csv columns every report uses
_COLUMNS = {"accuracy": "test accuracy", "ece": "test ece", "smece": "test smece", "nll": "test nll",
            "brier": "test brier", "ts ece": "temperature ece", "ts smece": "temperature smece",
            "ts nll": "temperature nll", "ts brier": "temperature brier", "temperature": "T"}
# the calibration table's columns: (runs.csv column, header, scale)
TABLE = [("test accuracy", "accuracy %", 100), ("test ece", "ECE %", 100), ("test smece", "smECE %", 100),
         ("test nll", "NLL", 1), ("test brier", "Brier", 1), ("temperature ece", "ECE after TS %", 100),
         ("temperature smece", "smECE after TS %", 100), ("temperature nll", "NLL after TS", 1),
         ("temperature brier", "Brier after TS", 1), ("T", "T", 1), ("nc1", "NC1 (train)", 1)]
# what a β > 1 run is set against: (name, the group's sweep label, its column per metric prefix)
TOOLBOX = (("temperature scaling of β = 1", "beta=1", "temperature "), ("label smoothing 0.1", "label-smoothing",
           "test "), ("focal loss, FLSD-53", "flsd53", "test "))
TOOLBOX_METRICS = ("ece", "nll", "brier")


def measure_replication(run: Run) -> RunMetrics:
    """One run's metrics: test raw and after temperature scaling, β = 1's regime read on validation, the MCE bin."""
    arrays = run.predictions
    if not len(arrays["val_labels"]):
        raise ValueError(f"{run.path} has no validation split; the replication study fits temperature scaling "
                         "and reads the regime there (set data.val_size)")
    metrics = RunMetrics.of({_COLUMNS[k]: v for k, v in score(arrays).items()})
    logits, labels = torch.from_numpy(arrays["test_logits"]).double(), torch.from_numpy(arrays["test_labels"]).long()
    test = calibration_metrics(logits, labels)
    val = calibration_metrics(torch.from_numpy(arrays["val_logits"]).double(),
                              torch.from_numpy(arrays["val_labels"]).long())
    gaps = (test.bins.accuracy - test.bins.mean_confidence).abs().nan_to_num(-1.0)
    metrics.test_mce, metrics.mce_bin_count = test.mce, test.bins.counts[int(gaps.argmax())]
    metrics.overconfidence, metrics.val_ece = test.mean_confidence - test.accuracy, val.ece
    metrics.val_overconfidence = val.mean_confidence - val.accuracy
    metrics.margin, metrics.train_accuracy = logit_margins(logits, labels).mean(), run.rows[-1]["train_acc"]
    features = RunView(run.path).features()  # measured from the checkpoint by gdsoftmax.engine.tasks.features
    if features is not None:
        metrics.nc1 = features["nc1"]
    return metrics


def _rows(runs: list[Run]) -> list[RunRow]:
    order = {name: i for i, name in enumerate(
        ["beta=1", "beta=2", "beta=5", "beta=10", "beta=20", "beta=50", "beta=0.1", "warmup", "label-smoothing",
         "flsd53"])}
    runs = sorted(runs, key=lambda r: (order.get(r.setting, len(order)), r.setting, r.config.seed))
    rows = []
    for run in runs:
        label = run.label if run.constant_beta is not None or run.is_warmup else {
            "label-smoothing": "label smoothing 0.1", "flsd53": "focal, FLSD-53"}.get(run.setting, run.setting)
        rows.append(RunRow(run.path.name, run.setting, label, run.constant_beta, run.is_warmup, run.config.seed,
                           measure_replication(run), run.config.data.dataset, run.config.model.name,
                           run.config.train.epochs))
    return rows


def toolbox_tests(groups: dict[str, list[RunRow]]) -> list[tuple[str, str, str, object, float]]:
    """Every β > 1 against every toolbox entry on ECE, NLL and Brier, paired by seed: (β label, toolbox name,
    metric, comparison, Holm p), one Holm family over all of them."""
    found = []
    for group in groups.values():
        if group[0].constant_beta is None or group[0].constant_beta <= 1:
            continue
        for tool, tool_group, prefix in TOOLBOX:
            reference = {r.seed: r for r in groups.get(tool_group, [])}
            paired = [r for r in group if r.seed in reference]
            for metric in TOOLBOX_METRICS:
                if len(paired) < 2:
                    continue
                test = paired_comparison([r.metrics[f"test {metric}"] for r in paired],
                                         [reference[r.seed].metrics[prefix + metric] for r in paired])
                found.append((group[0].label, tool, metric, test))
    adjusted = holm([t.p_value for *_, t in found])
    return [(*f, p) for f, p in zip(found, adjusted, strict=True)]


def _regime_lines(reference: list[RunRow]) -> list[str]:
    values = [r.metrics["val overconfidence"] for r in reference if math.isfinite(r.metrics["val overconfidence"])]
    mean = sum(values) / len(values) if values else math.nan
    reached = math.isfinite(mean) and mean >= REGIME_THRESHOLD
    test = mean_std([r.metrics["overconfidence"] for r in reference])[0]
    train = mean_std([r.metrics["train accuracy"] for r in reference])[0]
    return [
        f"**Regime: {'over-confident' if reached else 'not over-confident'}.** β = 1's mean confidence − accuracy "
        f"on the validation split is {100 * mean:+.2f} points over {len(values)} seeds (the gate registered for the "
        f"calibration claims: ≥ {100 * REGIME_THRESHOLD:g} points, read on validation; on test it is "
        f"{100 * test:+.2f}); its training accuracy {100 * train:.2f} %."]


def _toolbox_lines(tests) -> list[str]:
    lines = []
    for label in dict.fromkeys(t[0] for t in tests):
        mine = [t for t in tests if t[0] == label and t[2] == "ece"]
        words = []
        for _, tool, _, test, p in mine:
            side = "lower" if test.difference < 0 else "higher"
            words.append(f"{side} than {tool} by {abs(100 * test.difference):.2f} points"
                         + (f" (Holm p = {p:.3g})" if p < 0.05 else f" (not significant at n = {test.n})"))
        lines.append(f"- {label}: ECE " + "; ".join(words) + ".")
    return lines


def _table(groups: dict[str, list[RunRow]]) -> str:
    columns = [(c, h, s) for c, h, s in TABLE if any(c in r.metrics for g in groups.values() for r in g)]
    rows = [[g[0].label, str(len(g)), *(format_mean_std([r.metrics[c] for r in g], s, 2 if s == 100 else 3)
                                        if all(c in r.metrics for r in g) else "—" for c, _, s in columns)]
            for g in groups.values()]
    return markdown_table(["setting", "seeds", *(h for _, h, _ in columns)], rows)


def _toolbox_table(tests) -> str:
    rows = [[label, tool, metric, f"{(100 if metric == 'ece' else 1) * t.difference:+.3g} "
             f"[{(100 if metric == 'ece' else 1) * t.ci_low:+.3g}, {(100 if metric == 'ece' else 1) * t.ci_high:+.3g}]",
             f"{t.p_value:.3g}", f"{p:.3g}", "lower" if p < 0.05 and t.difference < 0 else
             "higher" if p < 0.05 else f"not significant at n = {t.n}"] for label, tool, metric, t, p in tests]
    return markdown_table(["β", "against", "metric", "Δ (β − it) [95 % CI]", "p", "Holm p", "β's value is"], rows)


def _compute(runs: list[Run]) -> str:
    # a stacked run's wall time is its group's: each of the group's runs carries its share
    seconds = sum(float(result.get("wall_time") or 0.0) / max(1, int(result.get("stacked_runs", 1)))
                  for result in (RunView(run.path).result() for run in runs))
    took = f"{seconds:.0f} s" if seconds < 120 else f"{seconds / 60:.1f} minutes"
    return f"Training took {took} of wall time over {len(runs)} runs (stacked runs share theirs)"


def build_replication_study(sweep_dir: str | Path, out_dir: str | Path, *, command: str = "") -> Path:
    """Write ``report.md``, ``runs.csv`` and ``claims.csv`` of one replication setting into ``out_dir``."""
    runs = load_runs(sweep_dir)
    rows = _rows(runs)
    groups, baseline = group_rows(rows)
    if baseline is None:
        raise ValueError(f"{sweep_dir} has no β = 1 runs: the regime and every test are read against them")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    families = Families(groups, baseline)
    verdicts = claims_verdicts(groups, families, "claims")
    tests = toolbox_tests(groups)
    regime = _regime_lines(groups[baseline])
    first = rows[0]
    lines = [f"# Replication: {first.dataset}, {first.model} ({first.epochs} epochs)", "", "## Verdict", "",
             *regime, "", *claims_verdict(verdicts), "", "Against the calibration toolbox (raw ECE of each β > 1; "
             "Holm over every row of the toolbox table):", "", *_toolbox_lines(tests), "",
             f"Runs: `{sweep_dir}`. {_compute(runs)}.", ""]
    if command:
        lines += ["Made with:", "", "```", command, "```", ""]
    lines += ["## Calibration table", "", "Test split, mean ± std over seeds; ECE with 15 equal-width bins; TS = "
              "temperature scaling fitted on each run's own validation split.", "", _table(groups), "",
              "## Against the calibration toolbox", "", "Each β > 1, raw, against temperature scaling of β = 1, label "
              "smoothing 0.1 (raw) and FLSD-53 (raw), paired by seed; Δ in ECE points, NLL and Brier units.", "",
              _toolbox_table(tests), "", f"Holm family: every row of this table (k = {len(tests)}).", "",
              *claims_section(verdicts, families)]
    write_runs_csv(out / "runs.csv", rows)
    write_verdicts(out / "claims.csv", verdicts)
    return write_text_atomically(out / "report.md", "\n".join(lines))
