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

>>> from gdsoftmax.engine.table1_study import arm_of
>>> arm_of("narrow-20-10_beta=0.001")
'narrow-20-10'
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from gdsoftmax.analysis import plots
from gdsoftmax.analysis.paper import lookup
from gdsoftmax.analysis.stats import holm, mean_std, paired_comparison, unpaired_comparison, verdict
from gdsoftmax.engine.config import to_dict
from gdsoftmax.engine.epochs import early_epoch
from gdsoftmax.engine.markdown import markdown_table
from gdsoftmax.engine.report import Run, load_runs
from gdsoftmax.engine.rundir import RunDirectory, failed_runs

__all__ = ["TABLE1_BETAS", "arm_of", "build_table1_report"]

TABLE1_BETAS = (1.0, 0.5, 0.1, 0.01, 0.001)  # the paper's columns
PAPER_METRIC = "training samples with p_c in the interval"
REFERENCE_ARM = "as stated"
FIGURE_BETAS = (1.0, 0.1, 0.001)  # the panels of the paper's Fig. 5 (arXiv v1)
# which samples Fig. 4's panel follows: these quantiles of the hardness ranking at β = 1 (hardest
# first), so that hard samples are seen, not only the easy majority a random draw gives
HARDNESS_QUANTILES = np.array([0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.4, 0.7, 0.95])
WARMUP_SOURCES = {  # label in configs/mnist_warmups.toml -> where its range is stated
    "ce": "β = 1: plain cross-entropy",
    "warmup-v1": "arXiv v1 §4.1, MNIST paragraph: β_initial 0.001, β_end 0.01",
    "warmup-iclr": "ICLR version §4, MNIST paragraph: 0.01 and 0.1 (its next words speak of an over-small 0.001: "
                   "ambiguous)",
    "beta=0.01": "constant end point of arXiv v1's range",
    "beta=0.1": "constant end point of the ICLR version's range",
}


def arm_of(setting: str) -> str:
    """The factor arm of a sweep setting: its name before ``_beta=`` (a plain β sweep has none)."""
    head, sep, _ = setting.partition("_beta=")
    return head if sep and head else REFERENCE_ARM


@dataclass
class _Cell:
    """The runs of one (arm, β), seeds in order, with their first-row counts at each recorded epoch."""

    runs: list[Run]
    low: dict[int, list[int]] = field(default_factory=dict)  # epoch -> per seed, samples with p_c <= 0.2

    @property
    def seeds(self) -> list[int]:
        return [r.config.seed for r in self.runs]

    def at(self, epoch: int, seeds: list[int]) -> list[int]:
        return [self.low[epoch][self.seeds.index(s)] for s in seeds]


def _cells(runs: list[Run]) -> dict[tuple[str, float], _Cell]:
    cells: dict[tuple[str, float], _Cell] = {}
    for run in sorted(runs, key=lambda r: r.config.seed):
        if run.constant_beta is None:
            continue
        cell = cells.setdefault((arm_of(run.setting), run.constant_beta), _Cell([]))
        cell.runs.append(run)
        for epoch, p_true in zip(run.samples["epochs"], run.samples["p_true"], strict=True):
            cell.low.setdefault(int(epoch), []).append(plots.interval_counts(p_true)[0])
    return cells


def _final_counts(run: Run) -> list[int]:
    return plots.interval_counts(run.samples["p_true"][-1])


def _test_accuracy(run: Run) -> float:
    return 100 * run.rows[-1]["test_acc"]


def _compute_minutes(runs: list[Run]) -> float:
    """Training time: a stacked group reports its time on each member, so each run counts its share."""
    return sum((r.values["wall_time"] or 0.0) / max(r.values["stacked_runs"], 1) for r in runs) / 60


def _mean_cell(values, digits=0) -> str:
    mean, std = mean_std(values)
    return f"{mean:.{digits}f} ± {std:.{digits}f}"


def _delta(c, digits=0) -> str:
    return f"{c.difference:+.{digits}f} [{c.ci_low:+.{digits}f}, {c.ci_high:+.{digits}f}]"


def _paper(interval: str, beta: float) -> int | None:
    found = lookup("mnist", "fcnn", f"{PAPER_METRIC} {interval}", f"{beta:g}", version="arXiv v1")
    return int(found[0].value) if found else None


# ---- the recipe sweep: Table 1 and its first row ------------------------------------------------


def _table1(cells, betas) -> list[str]:
    header = ["p_c interval"] + [f"β = {b:g}: ours (paper)" for b in betas]
    rows = []
    for i, (a, b) in enumerate(plots.INTERVALS):
        interval = f"({a:g}, {b:g}]"
        rows.append([interval, *(f"{_mean_cell([_final_counts(r)[i] for r in cells[(REFERENCE_ARM, beta)].runs])} "
                                 f"({_paper(interval, beta) or '—'})" for beta in betas)])
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


def _verdict_section(cells, betas, epochs) -> list[str]:
    last = epochs[-1]
    paper_base = _paper("(0, 0.2]", 1.0)
    rows = []
    for beta, c, p in _first_row_tests(cells, betas, last):
        paper = _paper("(0, 0.2]", beta)
        rows.append([f"{beta:g}", _mean_cell(cells[(REFERENCE_ARM, beta)].low[last]),
                     _mean_cell(cells[(REFERENCE_ARM, 1.0)].low[last]), _delta(c), f"{c.p_value:.3g}", f"{p:.3g}",
                     verdict(c, +1, p), f"{paper - paper_base:+d}" if paper is not None else "—"])
    along = []
    for epoch in epochs:
        tests = _first_row_tests(cells, betas, epoch)
        along.append([str(epoch), _mean_cell(cells[(REFERENCE_ARM, 1.0)].low[epoch]),
                      *(f"{c.difference:+.0f}{' ↑' if verdict(c, +1, p) == 'confirmed' else ''}"
                        f"{' ↓' if verdict(c, +1, p) == 'refuted' else ''}" for _, c, p in tests)])
    confirmed = {e for e in epochs for _, c, p in _first_row_tests(cells, betas, e) if verdict(c, +1, p) == "confirmed"}
    return ["## The first row's claim: over-small β leaves more samples at p_c <= 0.2", "",
            f"At the last epoch ({last}). Δ = count(β) − count(β = 1), paired by seed, with its 95 % t-interval; "
            f"the paired t-test's p-value is Holm-corrected over the {len(betas) - 1} βs ≠ 1. *confirmed* needs a "
            "corrected p < 0.05 in the paper's direction (more samples), *refuted* the same the other way. The "
            "paper's Δ is arXiv v1 Table 1's count minus its 903 at β = 1 (one run, no spread given).", "",
            markdown_table(["β", "ours at p_c <= 0.2", "β = 1", "Δ [95 % CI]", "p", "Holm p", "verdict",
                            "paper's Δ"], rows), "",
            "Along training, mean Δ against β = 1 at each recorded epoch (↑ confirmed, ↓ refuted, Holm over the βs "
            "at that epoch):", "",
            markdown_table(["epoch", "β = 1 count"] + [f"Δ β = {b:g}" for b in betas if b != 1.0], along), "",
            f"Epochs at which some β ≠ 1 confirms the claim: {sorted(confirmed) or 'none'}.", ""]


def _accuracy_section(cells, betas) -> list[str]:
    base = cells[(REFERENCE_ARM, 1.0)].runs
    rows, tests = [], []
    for beta in betas:
        runs = cells[(REFERENCE_ARM, beta)].runs
        if beta != 1.0:
            tests.append((beta, paired_comparison([_test_accuracy(r) for r in runs],
                                                  [_test_accuracy(b) for b in base[: len(runs)]])))
    adjusted = dict(zip([b for b, _ in tests], holm([c.p_value for _, c in tests]), strict=True))
    comparisons = dict(tests)
    for beta in betas:
        runs = cells[(REFERENCE_ARM, beta)].runs
        c = comparisons.get(beta)
        rows.append([f"{beta:g}", len(runs), _mean_cell([_test_accuracy(r) for r in runs], 2),
                     _delta(c, 2) + f" (Holm p = {adjusted[beta]:.3g})" if c else "—",
                     _mean_cell([100 * r.rows[-1]["train_acc"] for r in runs], 2)])
    n_test = len(base[0].predictions["test_labels"])
    return [f"## Test accuracy ({n_test:,} test images)", "",
            "Neither version prints MNIST accuracies in a table (the ICLR version plots them), so there is no "
            "number to set beside these.", "",
            markdown_table(["β", "seeds", "test acc %", "Δ vs β = 1 [95 % CI]", "train acc %"], rows), ""]


# ---- the factor sweep ----------------------------------------------------------------------------


def _factor_section(cells, factor_cells, epochs, descriptions) -> list[str]:
    """Per arm: Δ = row(0.001) − row(1) paired by seed at the end and at its largest epoch, and how far
    it moves from the recipe's Δ (Welch, since arms are different models)."""
    everything = {**cells, **factor_cells}
    factor_seeds = {s for cell in factor_cells.values() for s in cell.seeds}

    def seeds_of(arm) -> list[int]:  # seeds with both β finished; the recipe uses the factor arms' seeds
        both = set(everything.get((arm, 0.001), _Cell([])).seeds) & set(everything.get((arm, 1.0), _Cell([])).seeds)
        return sorted(both & factor_seeds if arm == REFERENCE_ARM else both)

    arms = [a for a in [REFERENCE_ARM, *sorted({arm for arm, _ in factor_cells})] if len(seeds_of(a)) >= 2]
    seeds = seeds_of(REFERENCE_ARM)
    last = epochs[-1]

    def at(arm, beta, epoch):
        return everything[(arm, beta)].at(epoch, seeds_of(arm))

    def deltas(arm, epoch):
        return [a - b for a, b in zip(at(arm, 0.001, epoch), at(arm, 1.0, epoch), strict=True)]

    within = [(arm, paired_comparison(at(arm, 0.001, last), at(arm, 1.0, last))) for arm in arms]
    adjusted = holm([c.p_value for _, c in within])
    rows = []
    for (arm, c), p in zip(within, adjusted, strict=True):
        peak_epoch = max(epochs, key=lambda e, arm=arm: np.mean(deltas(arm, e)))
        moved = unpaired_comparison(deltas(arm, last), deltas(REFERENCE_ARM, last)) if arm != REFERENCE_ARM else None
        direction = ("—" if moved is None else "towards the paper" if moved.significant and moved.difference > 0
                     else "away from the paper" if moved.significant else "no clear change")
        accuracy = [_mean_cell([_test_accuracy(r) for r in everything[(arm, b)].runs
                                if r.config.seed in seeds_of(arm)], 2) for b in (1.0, 0.001)]
        rows.append([arm, descriptions.get(arm, ""), _mean_cell(at(arm, 1.0, last)), _mean_cell(at(arm, 0.001, last)),
                     _delta(c), f"{p:.3g}", verdict(c, +1, p),
                     f"{np.mean(deltas(arm, peak_epoch)):+.0f} @ {peak_epoch}",
                     _delta(moved) + f" (p = {moved.p_value:.2g})" if moved else "—", direction, *accuracy])
    header = ["arm", "what changes", "β = 1: p_c <= 0.2", "β = 0.001: p_c <= 0.2", "Δ (0.001 − 1) [95 % CI]",
              "Holm p", "paper's direction?", "largest mean Δ @ epoch", "Δ − recipe's Δ [95 % CI]",
              "moves Δ", "test acc % β = 1", "test acc % β = 0.001"]
    paper_delta = _paper("(0, 0.2]", 0.001) - _paper("(0, 0.2]", 1.0)
    return ["## What produces the paper's pattern: one factor at a time", "",
            f"Each arm is the recipe with one change, trained at β = 1 and β = 0.001 on seeds {seeds} (an arm "
            "whose cell stopped early counts the seeds where both of its β finished). Δ is the "
            f"first row at the last epoch ({last}), β = 0.001 minus β = 1 paired by seed (the paper's Δ is "
            f"{paper_delta:+d}); its p-value is Holm-corrected over the arms. *Largest mean Δ* scans every recorded "
            "epoch: the factor 'the epoch counted'. 'Δ − recipe's Δ' compares an arm's Δs with the recipe's "
            "(Welch's t-test, unpaired since the arms are different models; not corrected).", "",
            markdown_table(header, rows), "",
            "Δ along training, per arm (mean over seeds; ↑ / ↓ where the paired test, Holm-corrected over the arms "
            "at that epoch, is significant towards / against the paper):", "",
            markdown_table(["arm", *(f"epoch {e}" for e in epochs)],
                           _deltas_along_training(arms, epochs, at)), ""]


def _deltas_along_training(arms, epochs, at) -> list[list[str]]:
    columns = []
    for epoch in epochs:
        tests = [paired_comparison(at(arm, 0.001, epoch), at(arm, 1.0, epoch)) for arm in arms]
        marks = [{"confirmed": " ↑", "refuted": " ↓"}.get(verdict(c, +1, p), "")
                 for c, p in zip(tests, holm([c.p_value for c in tests]), strict=True)]
        columns.append([f"{c.difference:+.0f}{mark}" for c, mark in zip(tests, marks, strict=True)])
    return [[arm, *(column[i] for column in columns)] for i, arm in enumerate(arms)]


def _stopped_cells(sweep_dir) -> list[str]:
    """The cells whose training stopped with an error (a diverged loss, say): a result too."""
    stopped = failed_runs(sweep_dir)
    if not stopped:
        return []
    rows = [[run.path.name, len(run.rows()), run.failure().split(" The run keeps")[0].strip()] for run in stopped]
    return ["Cells that stopped before the end (a stacked group stops as a whole when one of its runs diverges; "
            "the message names that run):", "",
            markdown_table(["cell", "epochs completed", "why (its run directory's failure note)"], rows), ""]


# ---- warm-ups --------------------------------------------------------------------------------------


def _warmup_section(runs: list[Run]) -> list[str]:
    """Each setting's final and early test accuracy, and both compared with β = 1 (paired by seed,
    Holm-corrected over the settings)."""
    groups: dict[str, list[Run]] = {}
    for run in sorted(runs, key=lambda r: (r.constant_beta != 1.0, r.constant_beta is not None, r.setting,
                                           r.config.seed)):
        groups.setdefault(run.setting, []).append(run)
    epoch = early_epoch(runs[0].config.train.epochs)
    final = {label: [_test_accuracy(r) for r in g] for label, g in groups.items()}
    early = {label: [100 * next(row for row in r.rows if row["epoch"] == epoch)["test_acc"] for r in g]
             for label, g in groups.items()}
    base = next((label for label, g in groups.items() if g[0].constant_beta == 1.0), None)
    versus = {}
    for name, values in (("final", final), ("early", early)):
        others = [label for label in groups if base is not None and label != base
                  and [r.config.seed for r in groups[label]] == [r.config.seed for r in groups[base]]]
        tests = [paired_comparison(values[label], values[base]) for label in others]
        for label, c, p in zip(others, tests, holm([c.p_value for c in tests]), strict=True):
            versus[(name, label)] = f"{_delta(c, 2)} (Holm p = {p:.2g})"
    rows = [[label, g[0].config.loss.beta.describe(), WARMUP_SOURCES.get(label, ""), len(g),
             _mean_cell(final[label], 2), versus.get(("final", label), "—"), _mean_cell(early[label], 2),
             versus.get(("early", label), "—"), _mean_cell([_final_counts(r)[0] for r in g])]
            for label, g in groups.items()]
    return ["## The MNIST warm-up as each version states it", "",
            "Linear β warm-up over the whole run (neither version states the iteration at which it ends; our "
            "choice), on the recipe above. Δ is against β = 1, paired by seed, Holm-corrected over the settings.", "",
            markdown_table(["setting", "β", "source", "seeds", "test acc %", "Δ vs β = 1",
                            f"test acc % @ epoch {epoch}", f"Δ @ epoch {epoch}", "p_c <= 0.2 at the end"], rows), ""]


# ---- the report ------------------------------------------------------------------------------------


def build_table1_report(recipe_dir: str | Path, out_dir: str | Path, *, factors_dir: str | Path | None = None,
                        warmups_dir: str | Path | None = None, descriptions: dict[str, str] | None = None,
                        preamble: list[str] | None = None) -> Path:
    """Write ``report.md`` and its figures into ``out_dir`` from the finished sweeps."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    recipe = _with_results(load_runs(recipe_dir))
    cells = {key: c for key, c in _cells(recipe).items() if key[0] == REFERENCE_ARM}
    betas = [b for b in TABLE1_BETAS if (REFERENCE_ARM, b) in cells]
    if 1.0 not in betas or len(betas) < 2:
        raise ValueError(f"{recipe_dir} needs finished runs at β = 1 and at least one of {TABLE1_BETAS[1:]}")
    epochs = sorted(set.intersection(*(set(c.low) for c in cells.values())))
    first = recipe[0].config
    n_seeds = min(len(c.runs) for c in cells.values())
    lines = ["# The paper's MNIST section: Table 1, its first row, and what moves it", "",
             *([*preamble, ""] if preamble else []),
             f"## Table 1 beside the paper's (epoch {epochs[-1]}, {n_seeds} seeds, all "
             f"{len(recipe[0].samples['p_true'][-1]):,} training samples)", "",
             "Training samples per interval of the true-class probability p_c, mean ± std over seeds; the paper's "
             "columns are arXiv v1 Table 1 (the ICLR version prints the same counts), one run each.", "",
             *_table1(cells, betas)]
    plots.low_confidence_curves(
        [(f"β = {b:g}", epochs, np.array([cells[(REFERENCE_ARM, b)].low[e] for e in epochs]).T)  # (S, E)
         for b in betas],
        [(f"β = {b:g}", _paper("(0, 0.2]", b)) for b in betas], out / "low_confidence_along_training.png",
        f"{first.data.dataset}, {first.model.name}: Table 1's first row along training")
    lines += [*_verdict_section(cells, betas, epochs),
              "![samples at p_c <= 0.2 along training](low_confidence_along_training.png)", "",
              *_accuracy_section(cells, betas)]
    shown = [cells[(REFERENCE_ARM, b)].runs[0] for b in FIGURE_BETAS if (REFERENCE_ARM, b) in cells]
    panels = [(r.label, r.samples["epochs"], r.samples["p_true"]) for r in shown]
    ranks = (HARDNESS_QUANTILES * len(shown[0].samples["p_true"][-1])).astype(int)
    tracked = plots.hardness_order(shown[0].samples["p_true"])[ranks]  # the same samples in every row
    plots.confidence_dynamics(panels, out / "confidence_dynamics.png", samples=tracked)
    lines += ["## Figs. 4–5: single samples and five groups along training", "",
              f"Seed {cells[(REFERENCE_ARM, 1.0)].seeds[0]} at β = {', '.join(f'{b:g}' for b in FIGURE_BETAS)} (the "
              "β values of arXiv v1 Fig. 5). Left: p_c of 12 training samples (Fig. 4's kind of plot), the same "
              "in every row, chosen at quantiles 0.05 %, 0.1 %, 0.2 %, 0.5 %, 1 %, 2 %, 5 %, 10 %, 20 %, 40 %, "
              "70 % and 95 % of the hardness ranking at β = 1 (hardest first, by final p_c); right: mean p_c of "
              "five equal groups of samples ranked by their final p_c (Fig. 5's). The "
              "ICLR version shows the same two kinds of panel as its Fig. 3, at β = 2, 1, 0.1 and 0.01.", "",
              "What the paper describes in them (arXiv v1 §4.2.1, in our words): at β = 1 the samples' confidences "
              "rise together; at small β easy samples reach p_c ≈ 1 first and hard ones follow later or not at all "
              "(a sample left behind is its evidence for 'sacrificed' hard samples); and the group means are higher "
              "at β = 0.1 than at β = 1 for almost every group.", "",
              "![confidence dynamics](confidence_dynamics.png)", ""]
    compute = [("recipe", recipe)]
    if factors_dir is not None:
        factor_runs = _with_results(load_runs(factors_dir))
        factor_cells = _cells(factor_runs)
        lines += _factor_section(cells, factor_cells, epochs, descriptions or _differences(factor_runs, recipe))
        lines += _stopped_cells(factors_dir)
        compute.append(("factors", factor_runs))
    if warmups_dir is not None:
        warmup_runs = _with_results(load_runs(warmups_dir))
        lines += _warmup_section(warmup_runs)
        compute.append(("warm-ups", warmup_runs))
    total = sum(_compute_minutes(runs) for _, runs in compute)
    lines += ["## Compute", "",
              markdown_table(["sweep", "finished runs", "training minutes (stacked runs share their group's time)"],
                             [[name, len(runs), f"{_compute_minutes(runs):.1f}"] for name, runs in compute]
                             + [["total", sum(len(r) for _, r in compute), f"{total:.1f}"]]), ""]
    path = out / "report.md"
    path.write_text("\n".join(lines))
    return path


def _flat(tree: dict, prefix: str = "") -> dict:
    flat = {}
    for key, value in tree.items():
        if isinstance(value, dict) and value and key not in ("options",):
            flat.update(_flat(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def _differences(factor_runs: list[Run], recipe: list[Run]) -> dict[str, str]:
    """Each arm -> the config keys where its runs differ from the recipe's (name, seed, β and the
    sweep table aside): what the arm changes, read from the configs saved with the runs."""
    ignore = {"name", "seed", "loss.beta", "sweep", "data.data_dir"}
    base = _flat(to_dict(recipe[0].config))
    described = {}
    for run in factor_runs:
        arm = arm_of(run.setting)
        if arm not in described:
            mine = _flat(to_dict(run.config))
            described[arm] = ", ".join(f"{key} = {mine.get(key)}" for key in sorted(set(mine) | set(base))
                                       if key not in ignore and mine.get(key) != base.get(key))
    return described


def _with_results(runs: list[Run]) -> list[Run]:
    """Each run's wall time and stack size from its result, for the compute table."""
    for run in runs:
        result = RunDirectory(run.path).result() or {}
        run.values["wall_time"] = result.get("wall_time", math.nan)
        run.values["stacked_runs"] = result.get("stacked_runs", 1)
    return runs
