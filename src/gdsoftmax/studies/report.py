"""Turn a finished sweep directory into ``report.md`` with tables, figures and claim verdicts.

Every number from training is a mean +- std over seeds; comparisons with beta = 1 are paired
by seed (paired t-test with its 95 % interval, Holm-corrected over the settings compared, *
for a corrected p < 0.05). The claims checked are the paper's own statements
(:mod:`gdsoftmax.studies.claims`), and the paper's printed numbers stand beside ours
(:mod:`gdsoftmax.studies.beside_paper`). Runs are read through :mod:`gdsoftmax.studies.runs`.
"""

from __future__ import annotations

import json
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from gdsoftmax.analysis import plots
from gdsoftmax.analysis.background import ForkedWork, forks_help
from gdsoftmax.analysis.binned import ECE_BINS
from gdsoftmax.analysis.estimators import calibration_estimates, smooth_reliability, top1
from gdsoftmax.analysis.files import write_text_atomically
from gdsoftmax.analysis.paper_claims import claim_by_id
from gdsoftmax.analysis.stats import format_mean_std, import_tests, mean_std
from gdsoftmax.engine.rundir.view import RunView, failed_runs
from gdsoftmax.studies.beside_paper import beside_the_paper
from gdsoftmax.studies.bottom_line import Setting, verdict_lines
from gdsoftmax.studies.claims import Families, claims_verdicts
from gdsoftmax.studies.epochs import CURRICULUM_EPOCH, early_epoch
from gdsoftmax.studies.markdown import markdown_table
from gdsoftmax.studies.measures import add_post_hoc, measure, start_post_hoc
from gdsoftmax.studies.run_table import RunRow, swept_keys, write_runs_csv
from gdsoftmax.studies.runs import Run, load_runs
from gdsoftmax.studies.verdicts import Verdict, write_verdicts

__all__ = ["build_report", "claims_section", "runs_to_know_about"]


def _groups(runs: list[Run]) -> dict[str, list[Run]]:
    """Runs grouped by everything but their seed (a swept data split seed makes settings of its own)."""
    by_config: dict[str, list[Run]] = {}
    for run in runs:
        by_config.setdefault(run.grouping, []).append(run)
    groups: dict[str, list[Run]] = {}
    for group in by_config.values():
        group.sort(key=lambda r: r.config.seed)
        name = group[0].setting
        groups[name if name not in groups else f"{name} ({len(groups)})"] = group
    return dict(sorted(groups.items(), key=lambda kv: _order_key(kv[1][0])))


def _order_key(run: Run):
    if run.constant_beta is not None:
        return (0, -run.constant_beta, "")
    return (1 if run.is_warmup else 2, 0, run.setting)


def _cell(group, key, scale=100.0, digits=2):
    return format_mean_std([r.metrics[key] for r in group], scale, digits)


def _versus_all(groups: dict[str, list[Run]], families: Families, key: str, scale: float = 100.0) -> dict[str, str]:
    """Δ against β = 1 for every setting, with its 95 % interval and its p-value Holm-corrected over the
    report's family for ``key`` (* for a corrected p < 0.05)."""
    family = families.family(key)
    cells = {}
    for name in groups:
        if name == families.baseline or families.baseline is None:
            cells[name] = "—"
            continue
        if name not in family:
            cells[name] = "n/a"
            continue
        c, adjusted = family[name].comparison, family[name].adjusted
        if c.undecided:
            cells[name] = f"{scale * c.difference:+.2f} (undecided: {c.undecided})"
            continue
        star = "*" if adjusted < 0.05 else ""
        cells[name] = (f"{scale * c.difference:+.2f} [{scale * c.ci_low:+.2f}, {scale * c.ci_high:+.2f}] "
                       f"(p={adjusted:.3f}){star}")
    return cells


def claims_section(verdicts: list[Verdict], families: Families, heading: str = "## Claims") -> list[str]:
    """The claims table of a report and the families its corrected p-values ran over."""
    if not verdicts:
        return []
    return [heading, "",
            "Each row tests a claim registered in `gdsoftmax/analysis/paper_claims.toml` (its id first; "
            "`gdsoftmax claims` gathers every report's rows into docs/results/CLAIMS.md). Verdict: *confirmed* if the "
            "difference has the claimed sign with a Holm-corrected p < 0.05, *refuted* if it has the opposite sign "
            "with a corrected p < 0.05, otherwise *inconclusive*. Δ carries its 95 % t-interval; d_z is the paired "
            "effect size (Pearson's r for a trend).", "",
            markdown_table(["claim", "setting", "ours", "β = 1", "Δ [95 % CI]", "d_z", "p", "Holm p",
                            "Holm family", "verdict"],
                           [v.cells() for v in verdicts]), "",
            families.note(), "", "The claims, in our words, with where the paper makes them:", "",
            *(f"- `{c.id}`: {c.says} ({'; '.join(s.cite() for s in c.sources)})"
              for c in dict.fromkeys(claim_by_id(v.claim) for v in verdicts)), ""]


@dataclass
class Additions:
    """What a study built on the sweep report adds to it: lines that open the verdict (``lead``), lines after it
    (``after_verdict``) and sections before the claims (``sections``)."""

    lead: list[str] = field(default_factory=list)
    after_verdict: list[str] = field(default_factory=list)
    sections: list[str] = field(default_factory=list)


def build_report(sweep_dir: str | Path, out_dir: str | Path | None = None, *, n_bins: int = ECE_BINS,
                 command: str = "", progress: bool = True, additions=None) -> Path:
    """Write ``report.md`` and its PNGs into ``out_dir`` (default: the sweep directory); ``progress`` shows a bar
    on stderr while the runs are measured and the bootstrap intervals drawn (the slow parts). ``additions(runs,
    rows)`` (a study's, given the measured runs and their rows) returns the :class:`Additions` the report
    carries, so that a study extends the report as it is written, never its markdown afterwards."""
    sweep_dir = Path(sweep_dir)
    out = Path(out_dir) if out_dir else sweep_dir
    runs = _reportable_runs(sweep_dir)
    out.mkdir(parents=True, exist_ok=True)
    groups = _groups(runs)
    forked = forks_help()  # the fits and the fit-free figures in forked children, this process on one thread
    with start_post_hoc(runs, n_bins, background=forked) as fits, _one_torch_thread(forked):
        for run in runs:  # a second or so without the fits: no progress bar (its thread would stop the forks)
            measure(run, n_bins, post_hoc=False)
        drawn = _drawn(groups, runs, out, n_bins, progress, forked)
        import_tests()  # while the fits finish: the verdicts below need it
        add_post_hoc(runs, fits)
    baseline = next((g for g in groups.values() if g[0].constant_beta == 1.0), None)
    swept = swept_keys(runs)
    rows = {name: [RunRow.of(r, name, swept) for r in g] for name, g in groups.items()}
    families = Families(rows, next((n for n, g in groups.items() if g is baseline), None))
    verdicts = claims_verdicts(rows, families, "claims")  # made first: the tables above it share its families
    added = additions(runs, [r for g in rows.values() for r in g]) if additions else Additions()
    first = runs[0].config
    n_seeds = max(len(g) for g in groups.values())
    verdict = [*added.lead, *_verdict(groups, families, runs, n_bins), "", *added.after_verdict]
    lines = [f"# Report: {sweep_dir.name}", "", "## Verdict", "", *verdict,
             f"{first.data.dataset}, model {first.model.name}, {first.train.epochs} epochs, {len(runs)} runs "
             f"({len(groups)} settings × up to {n_seeds} seeds). Mean ± std over seeds; Δ is paired by seed "
             f"against β = 1, with its 95 % t-interval in brackets and the paired t-test's p-value "
             f"Holm-corrected over one family per metric: every setting compared with β = 1 on that metric (* for a "
             f"corrected p < 0.05; each table names its families). ECE/MCE use "
             f"{n_bins} equal-width bins.", "",
             "The claims tested are the paper's own statements, as registered with their sources in "
             "`gdsoftmax/analysis/paper_claims.toml`. Every number here, including the β = 1 baseline, is our "
             "measurement; `runs.csv` beside this report holds the per-run values every verdict is computed from, "
             "and `claims.csv` the verdicts.", ""]
    lines += runs_to_know_about(sweep_dir, runs)
    if command:
        lines += ["Regenerate with:", "", "```", command, "```", ""]
    lines += _final_metrics(groups, families, n_bins)
    if "T" in runs[0].metrics:
        lines += _post_hoc(groups, out, first.data.dataset)
    else:
        lines += ["## Post-hoc calibration", "", "None: the runs hold out no validation split (data.val_size = 0) to "
                  "fit temperature or vector scaling on, and test is never used for fitting.", ""]
    lines += drawn["estimators"] + drawn["intervals"]
    lines += _convergence(groups, families) + drawn["convergence"] + drawn["figures"]
    lines += beside_the_paper(groups, first, n_bins) + added.sections
    lines += claims_section(verdicts, families)
    write_runs_csv(out / "runs.csv", [r for g in rows.values() for r in g])
    write_verdicts(out / "claims.csv", verdicts)
    return write_text_atomically(out / "report.md", "\n".join(lines))


@contextmanager
def _one_torch_thread(forked: bool):
    """This process computes on one torch thread while its forked children share the cores (a second torch
    thread would spin on a core they need: 2 s of a 20 s report on two cores); without children, as it was."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1 if forked else threads)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def _reportable_runs(sweep_dir: Path) -> list[Run]:
    """The sweep's runs, refused when they are a language model's or span several data sets."""
    runs = load_runs(sweep_dir)
    text = [run for run in runs if "test_logits" not in run.predictions]
    if text:
        raise ValueError(f"{text[0].path} is a language model's run (a text corpus has no test split and no "
                         f"per-class logits to report): use gdsoftmax study lm {sweep_dir} --out "
                         f"{Path(sweep_dir) / 'report'}")
    data_sets = sorted({run.config.data.dataset for run in runs})
    if len(data_sets) > 1:
        raise ValueError(f"the runs under {sweep_dir} were trained on different data sets ({', '.join(data_sets)}); "
                         "their metrics do not compare: report each data set's sweep on its own")
    return runs


def _cells(sweep_dir: Path) -> list[RunView]:
    """The run directories directly below a sweep directory (folders holding a run's config or identity)."""
    folders = [path for path in sorted(Path(sweep_dir).iterdir()) if path.is_dir()] if Path(sweep_dir).is_dir() else []
    return [RunView(path) for path in folders if (path / "config.toml").exists() or (path / "run.json").exists()]


def _verdict(groups: dict[str, list[Run]], families: Families, runs: list[Run], n_bins: int) -> list[str]:
    """The report's bottom line from its own families: each setting's ECE and accuracy against β = 1, and
    temperature scaling of β = 1 beside them (never MCE, whose near-empty bins make it noisy)."""
    if families.baseline is None:
        return ["No β = 1 runs here: nothing is compared with cross-entropy, so this report gives no verdict on β."]
    scaled = "T" in runs[0].metrics
    ece, accuracy = families.family("test ece"), families.family("test accuracy")
    versus = families.family("test ece", "temperature ece") if scaled else {}
    settings = [Setting(groups[name][0].label, ece[name].comparison.n, (ece[name].comparison, ece[name].adjusted),
                        (accuracy[name].comparison, accuracy[name].adjusted),
                        (versus[name].comparison, versus[name].adjusted) if name in versus else None)
                for name in groups if name in ece and name in accuracy]
    reference = mean_std([r.metrics.temperature_ece for r in groups[families.baseline]])[0] if scaled else None
    return [*verdict_lines(settings, "β = 1", reference), f"(ECE with {n_bins} equal-width bins, as in every table.)"]


def runs_to_know_about(sweep_dir: Path, runs: list[Run]) -> list[str]:
    """Runs a reader must know of: cells that stopped with an error (not in any table), and runs that
    were extended (trained first to a shorter train.epochs), which are never presented as fresh runs."""
    lines = []
    failed = failed_runs(sweep_dir)
    if failed:
        lines += [f"**{len(failed)} cell(s) stopped with an error and are in no table below:** "
                  + "; ".join(f"{run.path.name} ({(run.failure() or '').strip().splitlines()[-1][:120]})"
                              for run in failed), ""]
    names = {run.path.name for run in runs} | {run.path.name for run in failed}
    unfinished = [view for view in _cells(sweep_dir) if view.path.name not in names and not view.is_finished]
    if unfinished:
        training = [view.path.name for view in unfinished if view.writer() is not None]
        stopped = [view.path.name for view in unfinished if view.writer() is None]
        lines += [f"**{len(unfinished)} cell(s) have not finished and are in no table below:** "
                  + "; ".join([*(f"{name} (training now)" for name in training),
                               *(f"{name} (stopped; rerun the sweep to finish it)" for name in stopped)])
                  + ". Make the report again once they finish.", ""]
    extended = [run for run in runs if run.extended_from]
    if extended:
        lines += [f"**{len(extended)} run(s) were extended** after finishing at a shorter length (the engine allows "
                  "this only where the learning rate of the epochs already trained stays the same): "
                  + "; ".join(f"{run.path.name} (from {', '.join(map(str, run.extended_from))} epochs)"
                              for run in extended), ""]
    return lines


def _final_metrics(groups: dict[str, list[Run]], families: Families, n_bins: int) -> list[str]:
    header = ["setting", "seeds", "test acc %", "Δ acc vs β=1", f"ECE % ({n_bins} bins)", "Δ ECE vs β=1", "MCE %",
              "adaptive ECE %", "NLL", "Brier", "conf − acc %", "margin"]
    rows = []
    accuracy, ece = _versus_all(groups, families, "test accuracy"), _versus_all(groups, families, "test ece")
    for name, group in groups.items():
        rows.append([group[0].label, len(group), _cell(group, "test accuracy"),
                     accuracy[name], _cell(group, "test ece"),
                     ece[name], _cell(group, "test mce"),
                     _cell(group, "test adaptive_ece"), _cell(group, "test nll", 1, 3),
                     _cell(group, "test brier", 1, 3), _cell(group, "overconfidence"), _cell(group, "margin", 1, 2)])
    return ["## Final test metrics", "", markdown_table(header, rows), "",
            f"Holm families: test accuracy vs β = 1 (k = {families.size('test accuracy')}); test ece vs β = 1 "
            f"(k = {families.size('test ece')}). The claims below read the same families.", ""]


def _post_hoc(groups: dict[str, list[Run]], out: Path, dataset: str) -> list[str]:
    rows = [[g[0].label, _cell(g, "test ece"), _cell(g, "temperature ece"), _cell(g, "vector ece"),
             _cell(g, "test mce"), _cell(g, "temperature mce"), _cell(g, "vector mce"), _cell(g, "T", 1, 2)]
            for g in groups.values()]
    lines = ["## Post-hoc calibration (fitted on the validation split, applied to test)", "",
             markdown_table(["setting", "ECE raw %", "ECE temp. scaling %", "ECE vector scaling %", "MCE raw %",
                              "MCE temp. %", "MCE vector %", "fitted T"], rows), ""]
    trend = [(g[0].constant_beta, {f"{m} {s}": mean_std([r.metrics[k] for r in g])
                                    for m, suffix in (("ECE", "ece"), ("MCE", "mce"))
                                    for s, k in (("raw", f"test {suffix}"),
                                                 ("temperature scaling", f"temperature {suffix}"),
                                                 ("vector scaling", f"vector {suffix}"))})
             for g in groups.values() if g[0].constant_beta is not None]
    if len(trend) >= 3:
        plots.calibration_trend(sorted(trend), out / "calibration_trend.png", f"{dataset}: calibration against β")
        lines += ["![ECE and MCE against beta](calibration_trend.png)", ""]
    return lines


BOOTSTRAP_RESAMPLES = 100
ESTIMATORS = [("binned ECE", "test ece"), ("adaptive ECE", "test adaptive_ece"),
              ("debiased L2 ECE", "test debiased_l2_ece"), ("smECE", "test smece")]


def _estimators(groups: dict[str, list[Run]], out: Path, n_bins: int, progress: bool = True) -> list[str]:
    """Every ECE estimator (mean ± std over seeds), the first seed's bootstrap intervals over test
    samples, and its smoothed reliability diagram."""
    rows, panels = [], []
    for g in tqdm(list(groups.values()), desc="bootstrap intervals", unit="setting", disable=None if progress else True,
                  leave=False):
        logits = torch.from_numpy(g[0].predictions["test_logits"]).double()
        labels = torch.from_numpy(g[0].predictions["test_labels"])
        # only the two the table prints: each estimator draws its own resamples from the same seed
        first = calibration_estimates(logits, labels, n_bins, n_resamples=BOOTSTRAP_RESAMPLES,
                                      names=("binned ECE", "smECE"))
        rows.append([g[0].label, *(_cell(g, key) for _, key in ESTIMATORS),
                     first["binned ECE"].format(), first["smECE"].format()])
        panels.append((g[0].label, smooth_reliability(*top1(logits, labels))))
    seed = next(iter(groups.values()))[0].config.seed
    plots.smooth_reliability_diagrams(panels, out / "smooth_reliability.png",
                                      f"Smoothed reliability diagrams, test set (seed {seed})")
    return ["## Calibration estimators of current practice", "",
            f"Binned ECE ({n_bins} equal-width bins) is biased upwards for a nearly calibrated model and jumps as "
            "confidences cross bin edges; adaptive ECE uses equal-mass bins; the debiased L2 ECE (Kumar et al. "
            "2019) subtracts each bin's sampling variance; smECE (Błasiok & Nakkiran 2024) smooths the reliability "
            f"curve with a kernel instead of bins. In % (mean ± std over seeds); the seed-{seed} columns give a "
            f"95 % bootstrap interval over test samples ({BOOTSTRAP_RESAMPLES} resamples).", "",
            markdown_table(["setting", *(f"{name} %" for name, _ in ESTIMATORS), f"binned ECE, seed {seed} [95 % CI]",
                            f"smECE, seed {seed} [95 % CI]"], rows), "",
            "![smoothed reliability diagrams](smooth_reliability.png)", ""]


def _confidence_intervals(groups: dict[str, list[Run]], out: Path) -> list[str]:
    rows = [[g[0].label] + [format_mean_std([r.measures.intervals[i] for r in g], 1, 0)
                            for i in range(5)] for g in groups.values()]
    plots.interval_bars([(g[0].label, [np.mean([r.measures.intervals[i] for r in g]) for i in range(5)])
                         for g in groups.values()],
                        out / "confidence_intervals.png", "Training samples by final p_c (mean over seeds)")
    epochs = sorted(set.intersection(*(set(r.measures.low_confidence_along_training) for g in groups.values()
                                       for r in g)))
    along = [[g[0].label] + [format_mean_std([r.measures.low_confidence_along_training[e] for r in g], 1, 0)
                             for e in epochs] for g in groups.values()]
    return ["## Table 1: training samples by final true-class probability", "",
            markdown_table(["setting"] + [f"({a:g}, {b:g}]" for a, b in plots.INTERVALS], rows), "",
            "![confidence intervals](confidence_intervals.png)", "",
            "Table 1's first row along training: training samples with p_c <= 0.2 at each recorded epoch "
            "(mean ± std over seeds; the paper does not say at which epoch it counted).", "",
            markdown_table(["setting"] + [f"epoch {e}" for e in epochs], along), ""]


def _convergence(groups: dict[str, list[Run]], families: Families) -> list[str]:
    early = early_epoch(next(iter(groups.values()))[0].config.train.epochs)
    early_acc = _versus_all(groups, families, "early test_acc")
    rows = [[g[0].label, _cell(g, "early train_ce", 1, 4), _cell(g, "early test_acc"),
             early_acc[n], _cell(g, "curriculum spread", 1, 3)] for n, g in groups.items()]
    return ["## Convergence and training dynamics", "",
            markdown_table(["setting", f"train CE @ epoch {early}", f"test acc % @ epoch {early}",
                            "Δ vs β=1", f"std of training p_c @ epoch {CURRICULUM_EPOCH}"], rows), "",
            f"Holm family: early test_acc vs β = 1 (k = {families.size('early test_acc')}).", ""]


def _convergence_figures(groups: dict[str, list[Run]], out: Path, dataset: str) -> list[str]:
    curves = []
    for g in groups.values():
        length = min(len(r.rows) for r in g)
        curves.append((g[0].label, [row["epoch"] for row in g[0].rows[:length]],
                       [[row["train_ce"] for row in r.rows[:length]] for r in g],
                       [[row["test_acc"] for row in r.rows[:length]] for r in g]))
    plots.learning_curves(curves, out / "learning_curves.png", f"{dataset}: convergence by β")
    dynamics = [(g[0].label, g[0].samples["epochs"], g[0].samples["p_true"]) for g in groups.values()]
    if len(dynamics) > 4:  # largest and smallest constant β, β = 1 and the first warm-up keep it readable
        constant = [i for i, g in enumerate(groups.values()) if g[0].constant_beta is not None]
        schedules = [i for i, g in enumerate(groups.values()) if g[0].constant_beta is None]
        ones = [i for i in constant if list(groups.values())[i][0].constant_beta == 1.0]
        picks = sorted({constant[0], constant[-1], *ones[:1], *schedules[:1]})
        dynamics = [dynamics[i] for i in picks]
    plots.confidence_dynamics(dynamics, out / "confidence_dynamics.png")
    return ["![learning curves](learning_curves.png)", "", "![confidence dynamics](confidence_dynamics.png)", ""]


def _drawn(groups: dict[str, list[Run]], runs: list[Run], out: Path, n_bins: int, progress: bool,
           forked: bool) -> dict:
    """The sections that need no post-hoc fit, made while those fits run: their lines by section. The figures
    that need nothing else are drawn in a forked child meanwhile when ``forked`` (else here, first)."""
    def draw(folder: Path) -> None:
        lines = {"convergence": _convergence_figures(groups, out, runs[0].config.data.dataset),
                 "figures": _figures(groups, runs, out)}
        (folder / "lines.json").write_text(json.dumps(lines))

    plots.pyplot()  # imported once, here, for the child to share
    with ForkedWork(draw, fork=forked) as drawing:
        drawn = {"estimators": _estimators(groups, out, n_bins, progress),
                 "intervals": _confidence_intervals(groups, out)}
        return {**drawn, **json.loads((drawing.wait() / "lines.json").read_text())}


def _figures(groups: dict[str, list[Run]], runs: list[Run], out: Path) -> list[str]:
    panels = [(g[0].label, g[0].measures.bins, g[0].metrics.test_ece, g[0].metrics.test_mce)
              for g in groups.values()]
    plots.reliability_diagrams(panels, out / "reliability.png", f"Reliability diagrams, test set (seed "
                                                                  f"{groups[next(iter(groups))][0].config.seed})")
    lines = ["## Reliability diagrams", "", "![reliability diagrams](reliability.png)", ""]
    if "test_features" in runs[0].predictions and runs[0].predictions["test_features"].shape[1] == 2:
        plots.feature_scatter([(g[0].label, g[0].predictions["test_features"],
                                g[0].predictions["test_labels"]) for g in groups.values()], out / "features.png")
        lines += ["## 2-D features", "", "![features](features.png)", ""]
    betas = sorted({g[0].constant_beta for g in groups.values() if g[0].constant_beta is not None})
    plots.gradient_curves(betas or [1.0], out / "gradient_decay.png")
    return [*lines, "## Gradient decay (theory, Figs 2 and 7)", "", "![gradient magnitude](gradient_decay.png)", ""]
