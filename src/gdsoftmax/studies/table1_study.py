"""The paper's Table 1 as a study: training samples by true-class probability p_c on MNIST, beside
the paper's counts, the verdict on its first row, a factor study and the warm-up ranges.

Table 1 (both versions) counts the 60,000 MNIST training samples in five p_c intervals for
β ∈ {1, 0.5, 0.1, 0.01, 0.001}; its claim is the first row: more samples stay at p_c <= 0.2 when β
is over-small (903 at β = 1, 2375 at β = 0.001). This module reads three sweeps and writes one
report:

* the recipe sweep (``configs/mnist_fcnn_paper.toml``): Table 1 beside the paper's, and each β
  compared with β = 1 on the first row, paired by seed and Holm-corrected over the βs, at the end
  and at every recorded epoch (the paper does not say when it counted);
* the factor sweep (``configs/mnist_table1_factors.toml``): one factor changed per arm, β = 1 and
  0.001; how far each arm moves Δ = row(β = 0.001) − row(β = 1) from the recipe's;
* the warm-up sweep (``configs/mnist_warmups.toml``): each version's stated range.

The cells behind every table are in :mod:`gdsoftmax.studies.table1_cells`, the factor arms' sections
in :mod:`gdsoftmax.studies.table1_factors`. Run it as ``gdsoftmax table1 RECIPE_DIR --factors DIR
--warmups DIR``.
"""

from __future__ import annotations

import math
from dataclasses import replace
from pathlib import Path

import numpy as np

from gdsoftmax.analysis import plots
from gdsoftmax.analysis.files import write_text_atomically
from gdsoftmax.analysis.stats import format_p, holm, paired_comparison, verdict
from gdsoftmax.loss.schedules import describe_beta
from gdsoftmax.studies.claims import Families, claims_verdicts, group_rows
from gdsoftmax.studies.epochs import early_epoch
from gdsoftmax.studies.markdown import markdown_table
from gdsoftmax.studies.measures import measure
from gdsoftmax.studies.report import claims_section
from gdsoftmax.studies.run_table import RunRow, swept_keys, write_runs_csv
from gdsoftmax.studies.runs import Run, load_runs
from gdsoftmax.studies.table1_cells import (
    REFERENCE_ARM,
    cells_of,
    delta_text,
    final_counts,
    mean_cell,
    paper_count,
)
from gdsoftmax.studies.table1_factors import differences, factor_section, stopped_cells
from gdsoftmax.studies.verdicts import write_verdicts

__all__ = ["TABLE1_BETAS", "build_table1_report"]

TABLE1_BETAS = (1.0, 0.5, 0.1, 0.01, 0.001)  # the paper's columns
OVER_SMALL = 0.1  # the first row's claim is about an over-small beta: at 0.5 the paper's own count falls
FIGURE_BETAS = (1.0, 0.1, 0.001)  # the panels of the paper's Fig. 5 (arXiv v1)
# which samples Fig. 4's panel follows: these quantiles of the hardness ranking at β = 1 (hardest
# first), so that hard samples are seen, not only the easy majority a random draw gives
HARDNESS_QUANTILES = np.array([0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.4, 0.7, 0.95])
WARMUP_SOURCES = {  # label in configs/mnist_warmups.toml -> where its range is stated
    "ce": "β = 1: plain cross-entropy",
    "warmup-v1": "arXiv v1 §4.1 (line 231), MNIST paragraph: β_initial 0.001, β_end 0.01",
    "warmup-iclr": "ICLR version Appendix A.1 (lines 756-759), MNIST paragraph: 0.01 and 0.1 (its next words "
                   "speak of an over-small 0.001: ambiguous)",
    "beta=0.01": "constant end point of arXiv v1's range",
    "beta=0.1": "constant end point of the ICLR version's range",
}


def _compute_minutes(runs: list[Run]) -> float:
    """Training time: a stacked group reports its time on each member, so each run counts its share."""
    return sum(r.training_seconds for r in runs if not math.isnan(r.training_seconds)) / 60



# ---- the recipe sweep: Table 1 and its first row ------------------------------------------------


def _table1(cells, betas) -> list[str]:
    header = ["p_c interval"] + [f"{describe_beta(b)}: ours (paper)" for b in betas]
    rows = []
    for i, (a, b) in enumerate(plots.INTERVALS):
        interval = f"({a:g}, {b:g}]"
        rows.append([interval, *(f"{mean_cell([final_counts(r)[i] for r in cells[(REFERENCE_ARM, beta)].runs])} "
                                 f"({paper_count(interval, beta) or '—'})" for beta in betas)])
    return [markdown_table(header, rows), ""]


def _first_row_tests(cells, betas, epoch) -> list[tuple[float, object, float]]:
    """(β, paired comparison with β = 1, Holm-adjusted p) for every β ≠ 1 at ``epoch``."""
    base = cells[(REFERENCE_ARM, 1.0)]
    tests = []
    for beta in betas:
        if beta == 1.0:
            continue
        cell = cells[(REFERENCE_ARM, beta)]
        seeds = [s for s in cell.seeds if s in base.seeds]
        tests.append((beta, paired_comparison(cell.at(epoch, seeds), base.at(epoch, seeds))))
    adjusted = holm([c.p_value for _, c in tests])
    return [(beta, c, p) for (beta, c), p in zip(tests, adjusted, strict=True)]


def _lead(cells, betas, epochs) -> list[str]:
    """The report's opening verdict: the first row's claim at the last epoch, counted over the over-small βs."""
    last = epochs[-1]
    tests = [(b, c, p) for b, c, p in _first_row_tests(cells, betas, last) if b <= OVER_SMALL]
    if not tests:
        return [f"No over-small β (≤ {OVER_SMALL:g}) was trained here: the first row's claim is not tested."]
    outcome = {b: verdict(c, +1, p) for b, c, p in tests}
    said = [f"{sum(v == 'confirmed' for v in outcome.values())} confirm it",
            f"{sum(v == 'refuted' for v in outcome.values())} refute it"]
    silent = [b for b, v in outcome.items() if v not in ("confirmed", "refuted")]
    if silent:
        seeds = min(len(cells[(REFERENCE_ARM, b)].runs) for b in silent)
        said.append(f"{len(silent)} {'is' if len(silent) == 1 else 'are'} not significant at n = {seeds} (not "
                    "evidence of no effect)")
    return [f"Table 1's first row, at epoch {last}: of {len(tests)} over-small β (≤ {OVER_SMALL:g}) set against "
            f"β = 1 on the count of training samples at p_c <= 0.2, {', '.join(said)} (Holm-corrected paired tests, "
            "below)."]


def _verdict_section(cells, betas, epochs) -> list[str]:
    last = epochs[-1]
    paper_base = paper_count("(0, 0.2]", 1.0)
    rows = []
    for beta, c, p in _first_row_tests(cells, betas, last):
        paper = paper_count("(0, 0.2]", beta)
        rows.append([f"{beta:g}", mean_cell(cells[(REFERENCE_ARM, beta)].low[last]),
                     mean_cell(cells[(REFERENCE_ARM, 1.0)].low[last]), delta_text(c), format_p(c.p_value), format_p(p),
                     verdict(c, +1, p) if beta <= OVER_SMALL else f"not claimed ({verdict(c, +1, p)} direction)",
                     f"{paper - paper_base:+d}" if paper is not None else "—"])
    along = []
    for epoch in epochs:
        tests = _first_row_tests(cells, betas, epoch)
        along.append([str(epoch), mean_cell(cells[(REFERENCE_ARM, 1.0)].low[epoch]),
                      *(f"{c.difference:+.0f}{' ↑' if verdict(c, +1, p) == 'confirmed' else ''}"
                        f"{' ↓' if verdict(c, +1, p) == 'refuted' else ''}" for _, c, p in tests)])
    confirmed = {e for e in epochs for b, c, p in _first_row_tests(cells, betas, e)
                 if b <= OVER_SMALL and verdict(c, +1, p) == "confirmed"}
    return ["## The first row's claim: over-small β leaves more samples at p_c <= 0.2", "",
            f"At the last epoch ({last}). Δ = count(β) − count(β = 1), paired by seed, with its 95 % t-interval; "
            f"the paired t-test's p-value is Holm-corrected over the {len(betas) - 1} βs ≠ 1 (the family of this "
            "count in the recipe sweep, as in the claims below). *confirmed* needs a "
            "corrected p < 0.05 in the paper's direction (more samples), *refuted* the same the other way. The claim "
            f"is about an over-small β (β ≤ {OVER_SMALL:g}): the paper's own count at β = 0.5 is below β = 1's, so "
            "β = 0.5 is shown but decides nothing. The "
            "paper's Δ is arXiv v1 Table 1's count minus its 903 at β = 1 (one run, no spread given).", "",
            markdown_table(["β", "ours at p_c <= 0.2", "β = 1", "Δ [95 % CI]", "p", "Holm p", "verdict",
                            "paper's Δ"], rows), "",
            "Along training, mean Δ against β = 1 at each recorded epoch (↑ confirmed, ↓ refuted, Holm over the βs "
            "at that epoch):", "",
            markdown_table(["epoch", "β = 1 count"] + [f"Δ {describe_beta(b)}" for b in betas if b != 1.0], along), "",
            f"Epochs at which some β ≠ 1 confirms the claim: {sorted(confirmed) or 'none'}.", ""]


def _accuracy_section(cells, betas, families: Families) -> list[str]:
    base = cells[(REFERENCE_ARM, 1.0)].runs
    family = families.family("test accuracy")
    rows = []
    for beta in betas:
        runs = cells[(REFERENCE_ARM, beta)].runs
        tested = family.get(runs[0].setting)
        rows.append([f"{beta:g}", len(runs), mean_cell([100 * r.metrics["test accuracy"] for r in runs], 2),
                     delta_text(_scaled(tested.comparison), 2) + f" (Holm p = {format_p(tested.adjusted)})"
                     if tested else "—", mean_cell([100 * r.rows[-1]["train_acc"] for r in runs], 2)])
    n_test = len(base[0].predictions["test_labels"])
    return [f"## Test accuracy ({n_test:,} test images)", "",
            "Δ is against β = 1, paired by seed, Holm-corrected over the βs ≠ 1 (the test-accuracy family of the "
            "recipe sweep; the claims table below reads the same tests).", "",
            "Neither version prints MNIST accuracies in a table (they are plotted: arXiv v1 Fig. 6, ICLR Fig. 4), "
            "so there is no number to set beside these.", "",
            markdown_table(["β", "seeds", "test acc %", "Δ vs β = 1 [95 % CI]", "train acc %"], rows), ""]


# ---- the factor sweep ----------------------------------------------------------------------------


# ---- warm-ups --------------------------------------------------------------------------------------


def _warmup_section(runs: list[Run]) -> list[str]:
    """Each setting's final and early test accuracy, and both compared with β = 1 (paired by seed,
    Holm-corrected over the settings)."""
    groups: dict[str, list[Run]] = {}
    for run in sorted(runs, key=lambda r: (r.constant_beta != 1.0, r.constant_beta is not None, r.setting,
                                           r.config.seed)):
        groups.setdefault(run.setting, []).append(run)
    epoch = early_epoch(runs[0].config.train.epochs)
    final = {label: [100 * r.metrics["test accuracy"] for r in g] for label, g in groups.items()}  # as measured
    early = {label: [100 * next(row for row in r.rows if row["epoch"] == epoch)["test_acc"] for r in g]
             for label, g in groups.items()}
    base = next((label for label, g in groups.items() if g[0].constant_beta == 1.0), None)
    versus = {}
    for name, values in (("final", final), ("early", early)):
        others = [label for label in groups if base is not None and label != base
                  and [r.config.seed for r in groups[label]] == [r.config.seed for r in groups[base]]]
        tests = [paired_comparison(values[label], values[base]) for label in others]
        for label, c, p in zip(others, tests, holm([c.p_value for c in tests]), strict=True):
            versus[(name, label)] = f"{delta_text(c, 2)} (Holm p = {format_p(p, 2)})"
    rows = [[label, g[0].config.loss.beta.describe(g[0].config.train.epochs), WARMUP_SOURCES.get(label, ""), len(g),
             mean_cell(final[label], 2), versus.get(("final", label), "—"), mean_cell(early[label], 2),
             versus.get(("early", label), "—"), mean_cell([final_counts(r)[0] for r in g])]
            for label, g in groups.items()]
    return ["## The MNIST warm-up as each version states it", "",
            "Linear β warm-up over the whole run (neither version states the iteration at which it ends; our "
            "choice), on the recipe above. Δ is against β = 1, paired by seed, Holm-corrected over the settings.", "",
            markdown_table(["setting", "β", "source", "seeds", "test acc %", "Δ vs β = 1",
                            f"test acc % @ epoch {epoch}", f"Δ @ epoch {epoch}", "p_c <= 0.2 at the end"], rows), ""]


# ---- the report ------------------------------------------------------------------------------------


def _not_mnist_warning(config) -> list[str]:
    """A study of another data set's runs (the digits stand-in) says so before its counts stand beside MNIST's."""
    if config.data.dataset == "mnist":
        return []
    return [f"**These runs are on {config.data.dataset}, not MNIST:** the paper's counts in brackets are of "
            "MNIST's 60,000 training samples and do not compare with ours; they stand here only to show the table's "
            "shape. Train configs/mnist_fcnn_paper.toml for the comparison.", ""]


def build_table1_report(recipe_dir: str | Path, out_dir: str | Path, *, factors_dir: str | Path | None = None,
                        warmups_dir: str | Path | None = None, descriptions: dict[str, str] | None = None,
                        preamble: list[str] | None = None) -> Path:
    """Write ``report.md`` and its figures into ``out_dir`` from the finished sweeps."""
    out = Path(out_dir)
    recipe = load_runs(recipe_dir)
    # MNIST's FCNN (digits, its small stand-in, serves the tests); counts of another model say nothing of Table 1
    unfit = sorted({f"{r.config.data.dataset}/{r.config.model.name}" for r in recipe} - {"mnist/fcnn", "digits/fcnn"})
    if unfit:
        raise ValueError(f"the Table 1 study reads MNIST runs of the paper's FCNN (configs/mnist_fcnn_paper.toml); "
                         f"{recipe_dir} holds {', '.join(unfit)} runs: use gdsoftmax report for those")
    cells = {key: c for key, c in cells_of(recipe).items() if key[0] == REFERENCE_ARM}
    betas = [b for b in TABLE1_BETAS if (REFERENCE_ARM, b) in cells]
    if 1.0 not in betas or len(betas) < 2:
        raise ValueError(f"{recipe_dir} needs finished runs at β = 1 and at least one of {TABLE1_BETAS[1:]}")
    epochs = sorted(set.intersection(*(set(c.low) for c in cells.values())))
    out.mkdir(parents=True, exist_ok=True)  # only once the runs fit: a refused study leaves no folder
    recipe_rows, families = _measured(recipe)
    first = recipe[0].config
    n_seeds = min(len(c.runs) for c in cells.values())
    lines = ["# The paper's MNIST section: Table 1, its first row, and what moves it", "",
             "## Verdict", "", *_lead(cells, betas, epochs), "",
             *([*preamble, ""] if preamble else []),
             f"## Table 1 beside the paper's (epoch {epochs[-1]}, {n_seeds} seeds, all "
             f"{len(recipe[0].samples['p_true'][-1]):,} training samples)", "",
             "Training samples per interval of the true-class probability p_c, mean ± std over seeds; the paper's "
             "columns are arXiv v1 Table 1 (the ICLR version prints the same counts), one run each.", "",
             *_not_mnist_warning(first),
             *_table1(cells, betas)]
    plots.low_confidence_curves(
        [(describe_beta(b), epochs, np.array([cells[(REFERENCE_ARM, b)].low[e] for e in epochs]).T)  # (S, E)
         for b in betas],
        [(describe_beta(b), paper_count("(0, 0.2]", b)) for b in betas], out / "low_confidence_along_training.png",
        f"{first.data.dataset}, {first.model.name}: Table 1's first row along training")
    lines += [*_verdict_section(cells, betas, epochs),
              "![samples at p_c <= 0.2 along training](low_confidence_along_training.png)", "",
              *_accuracy_section(cells, betas, families)]
    lines += _dynamics_section(cells, out)
    compute = [("recipe", recipe)]
    if factors_dir is not None:
        factor_runs = load_runs(factors_dir)
        factor_cells = cells_of(factor_runs)
        lines += factor_section(cells, factor_cells, epochs, descriptions or differences(factor_runs, recipe))
        lines += stopped_cells(factors_dir)
        compute.append(("factors", factor_runs))
    lines += _claims_and_data(out, recipe_rows, families, warmups_dir, compute)
    lines += _compute_section(compute)
    return write_text_atomically(out / "report.md", "\n".join(lines))


def _compute_section(compute: list[tuple[str, list[Run]]]) -> list[str]:
    total = sum(_compute_minutes(runs) for _, runs in compute)
    return ["## Compute", "",
            markdown_table(["sweep", "finished runs", "training minutes (stacked runs share their group's time)"],
                           [[name, len(runs), f"{_compute_minutes(runs):.1f}"] for name, runs in compute]
                           + [["total", sum(len(r) for _, r in compute), f"{total:.1f}"]]), ""]


def _dynamics_section(cells, out: Path) -> list[str]:
    """Figs. 4–5 for the first seed at FIGURE_BETAS: the same samples, hardest to easiest, in every row."""
    shown = [cells[(REFERENCE_ARM, b)].runs[0] for b in FIGURE_BETAS if (REFERENCE_ARM, b) in cells]
    panels = [(r.label, r.samples["epochs"], r.samples["p_true"]) for r in shown]
    ranks = (HARDNESS_QUANTILES * len(shown[0].samples["p_true"][-1])).astype(int)
    tracked = plots.hardness_order(shown[0].samples["p_true"])[ranks]  # the same samples in every row
    plots.confidence_dynamics(panels, out / "confidence_dynamics.png", samples=tracked)
    return ["## Figs. 4–5: single samples and five groups along training", "",
            f"Seed {cells[(REFERENCE_ARM, 1.0)].seeds[0]} at β = {', '.join(f'{b:g}' for b in FIGURE_BETAS)} (the "
            "β values of arXiv v1 Fig. 5). Left: p_c of 12 training samples (Fig. 4's kind of plot), the same "
            "in every row, chosen at quantiles 0.05 %, 0.1 %, 0.2 %, 0.5 %, 1 %, 2 %, 5 %, 10 %, 20 %, 40 %, "
            "70 % and 95 % of the hardness ranking at β = 1 (hardest first, by final p_c); right: mean p_c of "
            "five equal groups of samples ranked by their final p_c (Fig. 5's). The "
            "ICLR version shows the same two kinds of panel as its Fig. 3, at β = 2, 1, 0.1 and 0.01.", "",
            "What the paper describes in them (arXiv v1 §3.2, lines 158-179, in our words): at β = 1 the samples' "
            "confidences rise together; at small β easy samples reach p_c ≈ 1 first and hard ones follow later or not "
            "at all (a sample left behind is its evidence for 'sacrificed' hard samples); and the group means are "
            "higher at β = 0.1 than at β = 1 for almost every group.", "",
            "![confidence dynamics](confidence_dynamics.png)", ""]


def _claims_and_data(out: Path, recipe_rows, families: Families, warmups_dir, compute: list) -> list[str]:
    """The claims sections (recipe sweep; warm-up sweep when given), and runs.csv / claims.csv beside the report."""
    verdicts = claims_verdicts(recipe_rows, families, "claims-the-recipe-sweep", applies={"small", "over-small"})
    lines = claims_section(verdicts, families, "## Claims: the recipe sweep")
    write_runs_csv(out / "runs.csv", [r for g in recipe_rows.values() for r in g])
    if warmups_dir is not None:
        warmup_runs = load_runs(warmups_dir)
        warmup_rows, warmup_families = _measured(warmup_runs)
        lines += _warmup_section(warmup_runs)
        warmup_verdicts = claims_verdicts(warmup_rows, warmup_families, "claims-the-warm-up-sweep", applies={"warmup"})
        lines += claims_section(warmup_verdicts, warmup_families, "## Claims: the warm-up sweep")
        verdicts += warmup_verdicts
        write_runs_csv(out / "runs-warmups.csv", [r for g in warmup_rows.values() for r in g])
        compute.append(("warm-ups", warmup_runs))
    write_verdicts(out / "claims.csv", verdicts)
    return lines


def _measured(runs: list[Run]) -> tuple[dict[str, list[RunRow]], Families]:
    """Each run measured as a sweep report measures it (the paper's 10 bins), its rows grouped by setting, and
    the Holm families over them (one per metric, every setting against β = 1)."""
    swept = swept_keys(runs)
    rows = []
    for run in sorted(runs, key=lambda r: (r.constant_beta is None, -(r.constant_beta or 0), r.setting,
                                           r.config.seed)):
        measure(run, 10)
        rows.append(RunRow.of(run, run.setting, swept))
    groups, baseline = group_rows(rows)
    return groups, Families(groups, baseline)


def _scaled(c, scale: float = 100.0):
    """A comparison of fractions shown in %."""
    return replace(c, difference=scale * c.difference, ci_low=scale * c.ci_low, ci_high=scale * c.ci_high)

