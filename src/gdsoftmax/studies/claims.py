"""The paper's claims as tests on a finished sweep: each claim compared with beta = 1, paired by seed,
Holm-corrected over the settings it is tested on, and the trends over beta as slopes on log10 beta.

A verdict is "confirmed" only when the corrected test has the claimed sign, "refuted" when it has
the opposite sign, otherwise "inconclusive".
"""

from __future__ import annotations

import math

from gdsoftmax.analysis.stats import format_p, holm, linear_trend, mean_std, paired_comparison, verdict
from gdsoftmax.studies.epochs import early_epoch

__all__ = ["TREND_CLAIMS", "claims_table"]


def claims_table(groups: dict[str, list], baseline: list | None) -> list[list[str]]:
    """(claim, setting, treatment, β = 1, Δ [95 % CI], d_z, p, Holm p, verdict) for every setting a claim
    applies to; the verdict is on the p-value Holm-corrected over those settings."""
    if baseline is None:
        return []
    specs = [
        # (claim, applies to, value key, scale, expected sign of treatment - baseline)
        ("β < 1 raises test accuracy (abstract: generalisation depends on the decay rate)", "small",
         "test accuracy", 100, +1),
        ("β < 1 makes the model over-confident (mean confidence − accuracy rises)", "small", "overconfidence", 100, +1),
        ("β < 1 converges faster early (lower train CE at epoch {early})", "small", "early train_ce", 1, -1),
        ("β < 1 converges faster early (higher test accuracy at epoch {early})", "small", "early test_acc", 100, +1),
        ("β < 1 enlarges the margin (mean z_y − max other logit, test)", "small", "margin", 1, +1),
        ("β < 1 leaves more training samples at p_c <= 0.2 at the end (Table 1's first row: 903 at β = 1, "
         "2375 at β = 0.001)", "small", "low confidence count", 1, +1),
        ("β < 1 learns easy samples first (wider spread of training p_c at epoch 2)", "small",
         "curriculum spread", 1, +1),
        ("β > 1 improves calibration (lower ECE)", "large", "test ece", 100, -1),
        ("β > 1 improves calibration (lower MCE)", "large", "test mce", 100, -1),
        ("β > 1 improves calibration (lower smECE, a binning-free estimator)", "large", "test smece", 100, -1),
        ("warm-up converges faster than β = 1 (lower train CE at epoch {early})", "warmup", "early train_ce", 1, -1),
        ("warm-up converges faster than β = 1 (higher test accuracy at epoch {early})", "warmup", "early test_acc",
         100, +1),
        ("warm-up keeps the final accuracy of β = 1 or better", "warmup", "test accuracy", 100, +1),
        ("β > 1 calibrates as well as temperature scaling of β = 1 (lower ECE; Table 3 sets them side by side)",
         "large", "test ece", 100, -1, "temperature ece"),
    ]
    seeds = [r.config.seed for r in baseline]
    early = early_epoch(baseline[0].config.train.epochs)
    table = []
    for claim, applies, key, scale, sign, *reference in specs:
        base_key = reference[0] if reference else key  # the baseline's value, usually the same quantity
        family = []  # the settings this claim is tested on: one Holm correction over them
        for group in groups.values():
            beta = group[0].constant_beta
            kind = ("warmup" if group[0].is_warmup else None) if beta is None else \
                "small" if beta < 1 else "large" if beta > 1 else None
            if kind != applies:
                continue
            paired = [r for r in group if r.config.seed in seeds]
            base = [next(b for b in baseline if b.config.seed == r.config.seed) for r in paired]
            if any(base_key not in b.values for b in base):
                continue
            c = paired_comparison([r.values[key] for r in paired], [b.values[base_key] for b in base])
            treat, ref = mean_std([r.values[key] for r in paired]), mean_std([b.values[base_key] for b in base])
            family.append((group, c, treat, ref))
        for (group, c, treat, ref), adjusted in zip(family, holm([c.p_value for _, c, _, _ in family]),
                                                    strict=True):
            table.append([claim.format(early=early), group[0].label, f"{scale * treat[0]:.3g}", f"{scale * ref[0]:.3g}",
                          f"{scale * c.difference:+.3g} [{scale * c.ci_low:+.3g}, {scale * c.ci_high:+.3g}]"
                          if not c.undecided else f"{scale * c.difference:+.3g}",
                          f"{c.effect_size:+.2f}", format_p(c.p_value), format_p(adjusted),
                          (c.undecided and f"undecided: {c.undecided}") or verdict(c, sign, adjusted)])
    return table + _trend_claims(groups)


TREND_CLAIMS = [  # (claim, value key, scale, expected sign of the slope on log10 beta)
    ("ECE falls as β rises (Table 3: 0.045 at β = 0.1 to 0.023 at β = 20, CIFAR-10 ResNet18)", "test ece", 100, -1),
    ("MCE falls as β rises (Table 3)", "test mce", 100, -1),
    ("test accuracy falls as β rises (Table 2's columns from 0.01 to 5)", "test accuracy", 100, -1),
]


def _trend_claims(groups: dict[str, list]) -> list[list[str]]:
    """One row per trend claim: the slope of a per-run value on log10 beta over every constant-beta run
    (one test per claim, so no correction), with its 95 % interval and Pearson's r in the d_z column."""
    runs = [r for g in groups.values() for r in g if r.constant_beta is not None]
    if len({r.constant_beta for r in runs}) < 3:
        return []
    x = [math.log10(r.constant_beta) for r in runs]
    table = []
    for claim, key, scale, sign in TREND_CLAIMS:
        t = linear_trend(x, [scale * r.values[key] for r in runs])
        table.append([claim, f"slope per decade of β, {len(runs)} runs", "", "",
                      f"{t.difference:+.3g} [{t.ci_low:+.3g}, {t.ci_high:+.3g}]", f"r = {t.effect_size:+.2f}",
                      f"{t.p_value:.3g}", "—", verdict(t, sign)])
    return table
