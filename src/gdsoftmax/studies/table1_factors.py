"""The Table 1 study's factor arms: each the recipe with one change, at β = 1 and β = 0.001, and how
far each moves Δ = first row(β = 0.001) − first row(β = 1) from the recipe's, at the end and along
training; arms where one β stopped early, and the cells that stopped.
"""

from __future__ import annotations

import numpy as np

from gdsoftmax.analysis.stats import format_p, holm, paired_comparison, unpaired_comparison, verdict
from gdsoftmax.engine.rundir.records import identity
from gdsoftmax.engine.rundir.view import failed_runs
from gdsoftmax.studies.markdown import markdown_table
from gdsoftmax.studies.runs import Run
from gdsoftmax.studies.table1_cells import (
    REFERENCE_ARM,
    Cell,
    arm_of,
    delta_text,
    final_test_accuracy,
    mean_cell,
    paper_count,
)

__all__ = ["differences", "factor_section", "stopped_cells"]


def factor_section(cells, factor_cells, epochs, descriptions) -> list[str]:
    """Per arm: Δ = row(0.001) − row(1) paired by seed at the end and at its largest epoch, and how far
    it moves from the recipe's Δ (Welch, since arms are different models)."""
    everything = {**cells, **factor_cells}
    factor_seeds = {s for cell in factor_cells.values() for s in cell.seeds}

    def seeds_of(arm) -> list[int]:  # seeds with both β finished; the recipe uses the factor arms' seeds
        both = set(everything.get((arm, 0.001), Cell([])).seeds) & set(everything.get((arm, 1.0), Cell([])).seeds)
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
        accuracy = [mean_cell([final_test_accuracy(r) for r in everything[(arm, b)].runs
                                if r.config.seed in seeds_of(arm)], 2) for b in (1.0, 0.001)]
        rows.append([arm, descriptions.get(arm, ""), mean_cell(at(arm, 1.0, last)), mean_cell(at(arm, 0.001, last)),
                     delta_text(c), format_p(p), verdict(c, +1, p),
                     f"{np.mean(deltas(arm, peak_epoch)):+.0f} @ {peak_epoch}",
                     delta_text(moved) + f" (p = {format_p(moved.p_value, 2)})" if moved else "—", direction,
                     *accuracy])
    header = ["arm", "what changes", "β = 1: p_c <= 0.2", "β = 0.001: p_c <= 0.2", "Δ (0.001 − 1) [95 % CI]",
              "Holm p", "paper's direction?", "largest mean Δ @ epoch", "Δ − recipe's Δ [95 % CI]",
              "moves Δ", "test acc % β = 1", "test acc % β = 0.001"]
    paper_delta = paper_count("(0, 0.2]", 0.001) - paper_count("(0, 0.2]", 1.0)
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
                           _deltas_along_training(arms, epochs, at)), "",
            *_one_sided_arms(everything, [a for a, _ in factor_cells if a not in arms], last)]


def _one_sided_arms(everything, missing, last) -> list[str]:
    """Arms where only one β finished (the other diverged, say): that β beside the recipe's, paired by seed."""
    rows = []
    for arm, beta in sorted({(a, b) for a, b in everything if a in missing}):
        cell, recipe = everything[(arm, beta)], everything[(REFERENCE_ARM, beta)]
        seeds = [s for s in cell.seeds if s in recipe.seeds]
        c = paired_comparison(cell.at(last, seeds), recipe.at(last, seeds))
        accuracy = [[final_test_accuracy(r) for r in x.runs if r.config.seed in seeds] for x in (cell, recipe)]
        rows.append([arm, f"{beta:g}", len(seeds), mean_cell(cell.at(last, seeds)), mean_cell(recipe.at(last, seeds)),
                     delta_text(c) + f" (p = {format_p(c.p_value, 2)})", mean_cell(accuracy[0], 2),
                     mean_cell(accuracy[1], 2)])
    if not rows:
        return []
    return ["Arms with one β finished (the other stopped, below): that β against the recipe's on the same seeds, "
            "paired by seed (not corrected).", "",
            markdown_table(["arm", "β", "seeds", "p_c <= 0.2", "recipe's", "Δ [95 % CI]", "test acc %",
                            "recipe's test acc %"], rows), ""]


def _deltas_along_training(arms, epochs, at) -> list[list[str]]:
    columns = []
    for epoch in epochs:
        tests = [paired_comparison(at(arm, 0.001, epoch), at(arm, 1.0, epoch)) for arm in arms]
        marks = [{"confirmed": " ↑", "refuted": " ↓"}.get(verdict(c, +1, p), "")
                 for c, p in zip(tests, holm([c.p_value for c in tests]), strict=True)]
        columns.append([f"{c.difference:+.0f}{mark}" for c, mark in zip(tests, marks, strict=True)])
    return [[arm, *(column[i] for column in columns)] for i, arm in enumerate(arms)]


def stopped_cells(sweep_dir) -> list[str]:
    """The cells whose training stopped with an error (a diverged loss, say): a result too."""
    stopped = failed_runs(sweep_dir)
    if not stopped:
        return []
    rows = [[run.path.name, len(run.rows()), run.failure().split(" The run keeps")[0].strip()] for run in stopped]
    return ["Cells that stopped before the end (a stacked group stops as a whole when one of its runs diverges; "
            "the message names that run):", "",
            markdown_table(["cell", "epochs completed", "why (its run directory's failure note)"], rows), ""]


def differences(factor_runs: list[Run], recipe: list[Run]) -> dict[str, str]:
    """Each arm -> the keys of its run identity that differ from the recipe's (name, seed and β
    aside): what the arm changes, read from the configs saved with the runs."""
    ignore = {"name", "seed", "loss.beta"}
    base = identity(recipe[0].config)
    described = {}
    for run in factor_runs:
        arm = arm_of(run.setting)
        if arm not in described:
            mine = identity(run.config)
            described[arm] = ", ".join(f"{key} = {mine.get(key)}" for key in sorted(set(mine) | set(base))
                                       if key not in ignore and mine.get(key) != base.get(key))
    return described
