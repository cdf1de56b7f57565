"""The paper's claims that a plain β sweep cannot decide, each tested by a study that crosses β with
one other factor (issue 27): oscillation × momentum, τ × β, capacity × β, and the warm-up against
A-Softmax and Center loss.

Each ``analyse_*`` function reads :class:`~gdsoftmax.studies.run_table.RunRow` values only and returns
the report's sections and the verdict rows for the claims ledger, so the committed ``runs.csv`` of a
study recomputes its ``claims.csv`` (:func:`verdicts_from_study_csv`). How each claim is made testable
is stated in the section that tests it.
"""

from __future__ import annotations

import math
import statistics
from pathlib import Path

from gdsoftmax.analysis.stats import linear_trend
from gdsoftmax.loss.schedules import describe_beta
from gdsoftmax.studies import factorial as fx
from gdsoftmax.studies.markdown import markdown_table
from gdsoftmax.studies.one_knob import one_knob
from gdsoftmax.studies.run_table import RunRow, read_runs_csv
from gdsoftmax.studies.verdicts import Verdict

__all__ = ["ANALYSES", "analyse_capacity", "analyse_lr", "analyse_oscillation", "analyse_tau", "analyse_warmup_margin",
           "verdicts_from_study_csv"]


def _meta(rows: list[RunRow], section: str) -> tuple:
    return section, rows[0].dataset, rows[0].model, rows[0].epochs


# ---- oscillation × momentum ------------------------------------------------------------------------

def analyse_oscillation(rows: list[RunRow]) -> tuple[list[str], list[Verdict]]:
    """Large β against β = 1 on the oscillation of test accuracy, at each momentum, and the difference
    of those effects between the highest and the lowest momentum (the interaction)."""
    if any(math.isnan(r.metrics.get("oscillation", math.nan)) for r in rows):
        raise ValueError("the oscillation study needs at least 6 epochs per run (two changes of test accuracy "
                         "in the second half of training); raise train.epochs")
    groups = fx.by_level(rows, lambda r: fx.level_value(r, "train.momentum"))
    momenta = sorted({m for m, _ in groups})
    betas = sorted({b for _, b in groups if b != 1.0})
    low, high = momenta[0], momenta[-1]
    settings = [(m, b) for m in momenta for b in betas]
    effects = [fx.paired_effect(f"{describe_beta(b)} vs β = 1, momentum {m:g}", groups[m, b], groups[m, 1.0],
                             "oscillation", scale=100) for m, b in settings]
    effects = fx.corrected(effects + [_interaction(groups, b, low, high) for b in betas])
    family = (f"oscillation: every β > 1 against β = 1 at each momentum, and each β's effect at momentum {high:g} "
              f"against its effect at {low:g}")
    table = markdown_table(["momentum", *(describe_beta(b) for b in [1.0, *betas])],
                           [[f"{m:g}", *(fx.mean_cell(groups[m, b], "oscillation", 100) for b in [1.0, *betas])]
                            for m in momenta])
    accuracy = markdown_table(["momentum", *(describe_beta(b) for b in [1.0, *betas])],
                              [[f"{m:g}", *(fx.mean_cell(groups[m, b], "test accuracy", 100) for b in [1.0, *betas])]
                               for m in momenta])
    lines = ["## Oscillation of test accuracy", "",
             "The measure: the standard deviation of the epoch-to-epoch changes of test accuracy over the second "
             "half of training, in points (mean ± std over seeds).", "", table, "",
             "Final test accuracy (%):", "", accuracy, "",
             "Each β > 1 against β = 1 at each momentum; then each β's effect at the highest momentum minus its "
             "effect at the lowest (the interaction the claim describes: oscillation with large β **and** high "
             "momentum, not with low momentum). Paired by seed.", "",
             *fx.effects_table(effects, family, "(points)")]
    # claimed: more oscillation than β = 1 at high momentum, and more than at low momentum
    claimed = [(e, +1) for e, setting in zip(effects, settings + [None] * len(betas), strict=True)
               if setting is None or setting[0] == high]
    return lines, fx.claim_rows("large-beta-oscillation", claimed, family, fx.family_size(effects),
                                _meta(rows, "oscillation"))


def _interaction(groups: dict, beta: float, low: float, high: float) -> fx.Effect:
    def differences(m):
        base = {r.seed: r.metrics["oscillation"] for r in groups[m, 1.0]}
        return {r.seed: r.metrics["oscillation"] - base[r.seed] for r in groups[m, beta] if r.seed in base}

    at_high, at_low = differences(high), differences(low)
    seeds = sorted(set(at_high) & set(at_low))
    return fx.paired_values(f"{describe_beta(beta)}: effect at momentum {high:g} minus effect at {low:g}",
                            {s: at_high[s] for s in seeds}, {s: at_low[s] for s in seeds}, scale=100)


# ---- τ × β ---------------------------------------------------------------------------------------------

TAU_METRICS = (("test accuracy", "test accuracy (%)", 100), ("overconfidence", "confidence − accuracy (points)", 100),
               ("test ece", "ECE (%)", 100), ("margin", "logit margin", 1))


def analyse_tau(rows: list[RunRow]) -> tuple[list[str], list[Verdict]]:
    """β's effect at every τ, and τ's effect at β = 1, on accuracy, confidence, ECE and margin."""
    groups = fx.by_level(rows, lambda r: fx.level_value(r, "loss.tau"))
    taus = sorted({t for t, _ in groups})
    betas = sorted({b for _, b in groups})
    table = markdown_table(["τ", "β", *(name for _, name, _ in TAU_METRICS)],
                           [[f"{t:g}", f"{b:g}", *(fx.mean_cell(groups[t, b], m, s) for m, _, s in TAU_METRICS)]
                            for t in taus for b in betas])
    lines = ["## τ and β", "", "Mean ± std over seeds. The test metrics read the network's raw logits (τ divides "
             "them inside the loss only).", "", table, ""]
    for metric, name, scale in TAU_METRICS:
        compared = [(t, b) for t in taus for b in betas if b != 1.0]
        beta_effects = fx.corrected([fx.paired_effect(f"{describe_beta(b)} vs β = 1, τ = {t:g}", groups[t, b],
                                                groups[t, 1.0], metric, scale=scale) for t, b in compared])
        tau_effects = fx.corrected([fx.paired_effect(f"τ = {t:g} vs τ = 1, β = 1", groups[t, 1.0], groups[1.0, 1.0],
                                               metric, scale=scale) for t in taus if t != 1.0])
        beta_family = f"{metric}: every β ≠ 1 against β = 1 at each τ"
        lines += [f"### {name}", "", "β against β = 1 at each τ:", "",
                  *fx.effects_table(beta_effects, beta_family, ""),
                  "τ against τ = 1 at β = 1:", "",
                  *fx.effects_table(tau_effects, f"{metric}: every τ ≠ 1 against τ = 1 at β = 1", "")]
    # The claim's test: can a τ at β = 1 reproduce a β cell on every quantity at once (gdsoftmax.studies.one_knob)?
    knob_lines, verdicts = one_knob(groups, taus, betas, _meta(rows, "one knob or two"))
    return lines + knob_lines, verdicts


# ---- capacity × β ---------------------------------------------------------------------------------------

def _width(row: RunRow) -> int:
    return int(fx.level_value(row, "model.options.hidden")[0])


def analyse_capacity(rows: list[RunRow]) -> tuple[list[str], list[Verdict]]:
    """Small β against β = 1 on test accuracy at each width, and the trend of that effect over log2 width."""
    groups = fx.by_level(rows, _width)
    widths = sorted({w for w, _ in groups})
    small = min(b for _, b in groups)
    effects = [fx.paired_effect(f"{describe_beta(small)} vs β = 1, width {w}", groups[w, small], groups[w, 1.0],
                             "test accuracy", scale=100) for w in widths]
    x, y = [], []
    for w in widths:
        base = {r.seed: r.metrics["test accuracy"] for r in groups[w, 1.0]}
        for r in groups[w, small]:
            if r.seed in base:
                x.append(math.log2(w))
                y.append(100 * (r.metrics["test accuracy"] - base[r.seed]))
    trend = linear_trend(x, y)
    effects = fx.corrected([*effects, fx.Effect(f"slope of Δ per doubling of width, {len(x)} seed pairs", trend,
                                          math.nan, math.nan)])
    family = (f"test accuracy: {describe_beta(small)} against β = 1 at each width, and the slope of that Δ over "
              "log2 width")
    table = markdown_table(["width", *(describe_beta(b) for b in (1.0, small)), "train acc % (β = 1)",
                            f"train acc % ({describe_beta(small)})"],
                           [[w, fx.mean_cell(groups[w, 1.0], "test accuracy", 100),
                             fx.mean_cell(groups[w, small], "test accuracy", 100),
                             fx.mean_cell(groups[w, 1.0], "train accuracy", 100),
                             fx.mean_cell(groups[w, small], "train accuracy", 100)] for w in widths])
    lines = ["## Capacity and β", "", "Test accuracy (%) by the width of both hidden layers, mean ± std over seeds:",
             "", table, "",
             f"{describe_beta(small)} against β = 1 at each width (points of test accuracy, paired by seed), and the "
             "slope of those per-seed differences against log2 width (Pearson's r as d_z):", "",
             *fx.effects_table(effects, family, "(points)")]
    # Testable form of the claim: a small β hurts the narrowest network, and its effect grows with capacity.
    claimed = [(effects[0], -1), (effects[-1], +1)]
    return lines, fx.claim_rows("capacity-dependence", claimed, family, fx.family_size(effects),
                                _meta(rows, "capacity and β"))


# ---- the warm-up against A-Softmax and Center loss ------------------------------------------------------

def analyse_warmup_margin(rows: list[RunRow]) -> tuple[list[str], list[Verdict]]:
    """The warm-up against A-Softmax, Center loss and CE on test accuracy, in one Holm family."""
    groups: dict[str, list[RunRow]] = {}
    for row in rows:
        groups.setdefault(row.group, []).append(row)
    for name in ("ce", "warmup", "a-softmax", "center"):
        if name not in groups:
            raise ValueError(f"the warm-up study needs settings ce, warmup, a-softmax and center; {name} is missing "
                             f"(found: {', '.join(groups)})")
    pairs = [("warmup", "a-softmax"), ("warmup", "center"), ("warmup", "ce"), ("a-softmax", "ce"), ("center", "ce")]
    effects = fx.corrected([fx.paired_effect(f"{a} vs {b}", groups[a], groups[b], "test accuracy", scale=100)
                         for a, b in pairs])
    family = "test accuracy: the warm-up against A-Softmax, Center loss and CE, and each margin loss against CE"
    metrics = (("test accuracy", 100), ("train accuracy", 100), ("test ece", 100), ("test nll", 1))
    table = markdown_table(["setting", "seeds", "test acc %", "train acc %", "ECE %", "NLL"],
                           [[name, len(g), *(fx.mean_cell(g, m, s) for m, s in metrics)] for name, g in groups.items()])
    lines = ["## The warm-up against A-Softmax and Center loss", "", table, "",
             "Test accuracy, paired by seed:", "", *fx.effects_table(effects, family, "(points)"),
             "The claim is read as \"the warm-up's accuracy is above each margin loss's\"; a non-significant Δ is "
             "inconclusive, not a match (no equivalence margin is tested).", ""]
    claimed = [(effects[0], +1), (effects[1], +1)]
    return lines, fx.claim_rows("warmup-vs-asoftmax-center", claimed, family, fx.family_size(effects),
                             _meta(rows, "warm-up against A-Softmax and Center loss"))


# ---- learning rate × β ----------------------------------------------------------------------------------

TRAINS_AT = 0.80  # a run "trains" when its loss stayed finite and its final test accuracy reached this
TARGET_ACCURACY = 0.85  # "epochs to target": the first epoch with test accuracy at or above this


def trains(row: RunRow) -> bool:
    return not row.metrics.get("diverged", 0.0) and row.metrics.get("test accuracy", 0.0) >= TRAINS_AT


def _per_seed(groups: dict, lrs: list[float], beta: float, value_of) -> dict[int, float]:
    """seed -> ``value_of(runs of that seed and β, by lr)``, in the order of the seeds."""
    seeds = sorted({r.seed for lr in lrs for r in groups.get((lr, beta), [])})
    return {seed: value_of({lr: next((r for r in groups.get((lr, beta), []) if r.seed == seed), None) for lr in lrs})
            for seed in seeds}


def analyse_lr(rows: list[RunRow]) -> tuple[list[str], list[Verdict]]:
    """Per β and seed: the largest learning rate at which the run trains, and the fewest epochs to the
    target accuracy over the rates; each β against β = 1, paired by seed."""
    groups = fx.by_level(rows, lambda r: fx.level_value(r, "train.lr"))
    lrs = sorted({lr for lr, _ in groups})
    betas = sorted({b for _, b in groups})
    epochs = rows[0].epochs
    below = math.log10(lrs[0]) - 0.5  # no rate of the grid trains: counted half a decade below the grid

    def largest(by_lr):
        return max((math.log10(lr) for lr, r in by_lr.items() if r is not None and trains(r)), default=below)

    def fastest(by_lr):  # runs that never reach the target count as epochs + 1 (censored)
        return min((r.metrics.get("epochs to target", math.nan) for r in by_lr.values() if r is not None
                    and not math.isnan(r.metrics.get("epochs to target", math.nan))), default=epochs + 1.0)

    largest_per_seed = {b: _per_seed(groups, lrs, b, largest) for b in betas}
    fastest_per_seed = {b: _per_seed(groups, lrs, b, fastest) for b in betas}
    stable = fx.corrected([fx.paired_values(f"{describe_beta(b)} vs β = 1: log10 largest lr that trains",
                                            largest_per_seed[b], largest_per_seed[1.0]) for b in betas if b != 1.0])
    speed = fx.corrected([fx.paired_values(f"{describe_beta(b)} vs β = 1: fewest epochs to {TARGET_ACCURACY:.0%}",
                                           fastest_per_seed[b], fastest_per_seed[1.0]) for b in betas if b != 1.0])
    stable_family = "log10 largest lr that trains: every β ≠ 1 against β = 1"
    speed_family = f"fewest epochs to {TARGET_ACCURACY:.0%}: every β ≠ 1 against β = 1"
    cells = [[f"{lr:g}", *(_lr_cell(groups.get((lr, b), [])) for b in betas)] for lr in lrs]
    lines = ["## Learning rate and β", "",
             f"Each cell: final test accuracy (%, mean ± std over the seeds that finished), how many seeds train "
             f"(loss finite and final test accuracy ≥ {TRAINS_AT:.0%}), and the mean epochs to "
             f"{TARGET_ACCURACY:.0%} test accuracy (— when no seed reached it in {epochs} epochs).", "",
             markdown_table(["lr", *(describe_beta(b) for b in betas)], cells), "",
             "Per seed, the largest rate of the grid at which the run trains (log10; half a decade below the grid "
             "when none does), each β against β = 1:", "",
             *fx.effects_table(stable, stable_family, "(decades)"),
             f"Per seed, the fewest epochs to {TARGET_ACCURACY:.0%} test accuracy over the rates ({epochs} + 1 when "
             "no rate reaches it), each β against β = 1:", "",
             *fx.effects_table(speed, speed_family, "(epochs)")]
    meta = _meta(rows, "learning rate and β")
    small = [i for i, b in enumerate(b for b in betas if b != 1.0) if b < 1.0]
    verdicts = fx.claim_rows("small-beta-larger-lr", [(stable[i], +1) for i in small], stable_family,
                             fx.family_size(stable), meta)
    verdicts += fx.claim_rows("small-beta-larger-lr", [(speed[i], -1) for i in small], speed_family,
                              fx.family_size(speed), meta)
    return lines, verdicts


def _lr_cell(group: list[RunRow]) -> str:
    finished = [r.metrics["test accuracy"] for r in group if not r.metrics.get("diverged", 0.0)]
    reached = [r.metrics["epochs to target"] for r in group
               if not math.isnan(r.metrics.get("epochs to target", math.nan))]
    accuracy = (f"{100 * sum(finished) / len(finished):.1f}" if finished else "diverged")
    spread = f" ± {100 * statistics.stdev(finished):.1f}" if len(finished) > 1 else ""
    speed = f"{sum(reached) / len(reached):.1f} ep" if reached else "—"
    return f"{accuracy}{spread}; {sum(trains(r) for r in group)}/{len(group)} train; {speed}"


ANALYSES = {"oscillation": analyse_oscillation, "tau": analyse_tau, "capacity": analyse_capacity,
            "warmup-margin": analyse_warmup_margin, "lr": analyse_lr}


def verdicts_from_study_csv(kind: str, path: str | Path) -> list[Verdict]:
    """A study's verdicts recomputed from its ``runs.csv`` alone."""
    return ANALYSES[kind](read_runs_csv(path))[1]
