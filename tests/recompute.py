"""Verdicts recomputed from a report's runs.csv by code that did not write them: the csv module, scipy's paired
t-test and Holm's step-down written out here, reading only the claim registry for which metric each claim tests.
A test that compares a report's claims.csv with this can fail where the report's own code went wrong."""

from __future__ import annotations

import csv
import math
from pathlib import Path

from scipy import stats

from gdsoftmax.analysis.paper_claims import claim_by_id


def holm(p_values: list[float]) -> list[float]:
    """Holm's step-down adjustment, monotone and capped at 1 (NaN stays NaN)."""
    order = sorted(range(len(p_values)), key=lambda i: p_values[i])
    adjusted, running = [math.nan] * len(p_values), 0.0
    for rank, i in enumerate(order):
        if math.isnan(p_values[i]):
            continue
        running = max(running, min(1.0, (len(p_values) - rank) * p_values[i]))
        adjusted[i] = running
    return adjusted


def paired_p_values(runs_csv: Path, claim_ids: set[str]) -> dict[tuple[str, str], tuple[float, float]]:
    """(claim, setting label) -> (raw p, Holm p) of its setting against β = 1, paired by seed, Holm over every
    setting against β = 1 on that claim's metric."""
    with open(runs_csv, encoding="utf-8", newline="") as handle:
        rows = list(csv.DictReader(handle))
    base = {r["seed"]: r for r in rows if r["constant_beta"] and float(r["constant_beta"]) == 1.0
            and r["warmup"] in ("0", "", "False")}
    labels = list(dict.fromkeys(r["label"] for r in rows if r["seed"] in base and r not in base.values()))
    found = {}
    for claim_id in claim_ids:
        test = claim_by_id(claim_id).test
        metric, baseline_metric = test.metric, test.baseline_metric or test.metric
        raw, tested = [], []
        for label in labels:  # a setting without the value (another loss has no NC1) is not in the family
            paired = [r for r in rows if r["label"] == label and r["seed"] in base
                      and r.get(metric, "") not in ("", "nan") and base[r["seed"]].get(baseline_metric, "") != ""]
            if not paired:
                continue
            a = [float(r[metric]) for r in paired]
            b = [float(base[r["seed"]][baseline_metric]) for r in paired]
            raw.append(stats.ttest_rel(a, b).pvalue if len(a) >= 2 else math.nan)
            tested.append(label)
        for label, p, q in zip(tested, raw, holm(raw), strict=True):
            found[(claim_id, label)] = (p, q)
    return found


def paired_verdicts(verdicts) -> list:
    """The verdicts that pair a setting with β = 1 (the trend claims, slopes over β, are left out)."""
    return [v for v in verdicts if claim_by_id(v.claim).test.applies != "trend"]
