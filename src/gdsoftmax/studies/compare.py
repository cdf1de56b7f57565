"""``gdsoftmax compare DIR``: does β help a model trained in any loop? The verdict from saved predictions.

``DIR`` holds one folder per setting and one file per seed, ``SETTING/SEED.npz``, each with the arrays
``val_logits`` (N, K), ``val_labels`` (N,), ``test_logits`` (M, K) and ``test_labels`` (M,): the names the
engine's own ``predictions.npz`` uses, so a folder of engine runs can be laid out the same way, and
:func:`gdsoftmax.analysis.predictions.save_predictions` writes them from a plain PyTorch, Lightning or
Trainer loop. Each file is scored on its test split, raw and after temperature scaling fitted on its
validation split: accuracy, ECE (15 equal-width bins, torchmetrics' binning), smECE, NLL and Brier.
Every setting is compared with the reference setting (``beta=1`` by default) over the seeds both
have, with the paired t-test, its 95 % interval and Holm's correction over the settings of one metric
(the family is stated under each table), as the sweep reports do; every setting's raw ECE is also
compared with temperature scaling of the reference. The report opens with its verdict.

>>> import tempfile, numpy as np
>>> root = Path(tempfile.mkdtemp())
>>> rng = np.random.default_rng(0)
>>> for setting, scale in (("beta=1", 4.0), ("beta=2", 2.0)):
...     for seed in range(3):
...         labels = rng.integers(0, 3, 200)
...         logits = scale * (rng.normal(size=(200, 3)) + np.eye(3)[labels])
...         _ = save_predictions(root / setting / f"{seed}.npz", logits[:100], labels[:100], logits[100:], labels[100:])
>>> result = compare(root)
>>> [row.setting for row in result.rows if row.setting != result.reference][:1], result.n_seeds
(['beta=2'], 3)
"""

from __future__ import annotations

import csv
import io
import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from gdsoftmax.analysis.binned import top1_of_logits
from gdsoftmax.analysis.estimators import smooth_ece
from gdsoftmax.analysis.metrics import calibration_metrics
from gdsoftmax.analysis.predictions import load_predictions, save_predictions
from gdsoftmax.analysis.scaling import fit_temperature
from gdsoftmax.analysis.stats import Comparison, format_mean_std, format_p, holm, mean_std, paired_comparison
from gdsoftmax.engine.checkpoint import atomic_write_bytes

__all__ = ["N_BINS", "CompareResult", "compare", "save_predictions", "write_compare_report"]

N_BINS = 15
# (key, column, scale, lower is better)
METRICS = [("accuracy", "accuracy %", 100, False), ("ece", "ECE %", 100, True), ("smece", "smECE %", 100, True),
           ("nll", "NLL", 1, True), ("brier", "Brier", 1, True), ("ts ece", "ECE after TS %", 100, True),
           ("ts smece", "smECE after TS %", 100, True), ("ts nll", "NLL after TS", 1, True),
           ("ts brier", "Brier after TS", 1, True)]


@dataclass
class SettingRow:
    setting: str
    seeds: list[str]
    values: dict[str, list[float]]  # metric -> per seed, in ``seeds`` order
    versus: dict[str, tuple[Comparison, float]] = field(default_factory=dict)  # metric -> (vs reference, Holm p)
    versus_ts: tuple[Comparison, float] | None = None  # raw ECE vs the reference's ECE after TS, Holm p


@dataclass
class CompareResult:
    root: Path
    reference: str
    rows: list[SettingRow]
    n_seeds: int  # seeds every setting shares with the reference (the smallest)


def score(arrays: dict[str, np.ndarray], n_bins: int = N_BINS) -> dict[str, float]:
    """One seed's test metrics, raw and after temperature scaling fitted on its validation split."""
    test, labels = torch.from_numpy(arrays["test_logits"]).double(), torch.from_numpy(arrays["test_labels"]).long()
    temperature = fit_temperature(torch.from_numpy(arrays["val_logits"]), torch.from_numpy(arrays["val_labels"]))
    values = {"temperature": temperature}
    for prefix, logits in (("", test), ("ts ", test / temperature)):
        report = calibration_metrics(logits, labels, n_bins)
        confidence, correct = top1_of_logits(logits, labels)
        values.update({f"{prefix}ece": report.ece, f"{prefix}smece": smooth_ece(confidence, correct),
                       f"{prefix}nll": report.nll, f"{prefix}brier": report.brier})
        if not prefix:
            values["accuracy"] = report.accuracy
    return values


def compare(root: str | Path, reference: str = "beta=1", n_bins: int = N_BINS) -> CompareResult:
    """Score every ``SETTING/SEED.npz`` under ``root`` and compare each setting with ``reference``."""
    root = Path(root)
    predictions = load_predictions(root)
    if reference not in predictions:
        raise ValueError(f"{root} has no folder {reference!r} to compare with (it has {sorted(predictions)}); "
                         "name the reference setting with --reference")
    scored = {setting: {seed: score(arrays, n_bins) for seed, arrays in seeds.items()}
              for setting, seeds in predictions.items()}
    ref = scored[reference]
    rows = [SettingRow(reference, sorted(ref), {m: [ref[s][m] for s in sorted(ref)] for m, *_ in METRICS})]
    for setting in sorted(set(scored) - {reference}):
        seeds = sorted(set(scored[setting]) & set(ref))
        if not seeds:
            raise ValueError(f"{root / setting} shares no seed (file name) with {root / reference}; pair them by seed")
        rows.append(SettingRow(setting, seeds, {m: [scored[setting][s][m] for s in seeds] for m, *_ in METRICS}))
    others = rows[1:]
    for metric, *_ in METRICS:  # one Holm family per metric: every setting against the reference
        tests = [paired_comparison(row.values[metric], [ref[s][metric] for s in row.seeds]) for row in others]
        for row, test, adjusted in zip(others, tests, holm([t.p_value for t in tests]), strict=True):
            row.versus[metric] = (test, adjusted)
    tests = [paired_comparison(row.values["ece"], [ref[s]["ts ece"] for s in row.seeds]) for row in others]
    for row, test, adjusted in zip(others, tests, holm([t.p_value for t in tests]), strict=True):
        row.versus_ts = (test, adjusted)
    return CompareResult(root, reference, rows, min((len(row.seeds) for row in others), default=len(ref)))


def _significant(pair: tuple[Comparison, float] | None) -> bool:
    return pair is not None and not math.isnan(pair[1]) and pair[1] < 0.05


def _delta(pair: tuple[Comparison, float], scale: float, unit: str) -> str:
    test, adjusted = pair
    d = 2 if scale == 100 else 4  # points of a percentage; NLL and Brier in their own units
    if test.undecided:
        return f"{scale * test.difference:+.{d}f}{unit} (undecided: {test.undecided})"
    word = "significant" if adjusted < 0.05 else f"not significant at n = {test.n}"
    return (f"{scale * test.difference:+.{d}f}{unit} [{scale * test.ci_low:+.{d}f}, {scale * test.ci_high:+.{d}f}], "
            f"{word} (Holm p = {format_p(adjusted)})")


def verdict(result: CompareResult) -> list[str]:
    """One to three sentences derived from the comparisons (never 'no difference' from a test that found none)."""
    ref, others = result.rows[0], result.rows[1:]
    if not others:
        return [f"Only {result.reference} is here: nothing to compare it with."]
    lines = [f"{row.setting} against {result.reference} over {len(row.seeds)} seeds: ECE "
             f"{_delta(row.versus['ece'], 100, ' points')}; accuracy {_delta(row.versus['accuracy'], 100, ' points')}."
             for row in others[:3]]
    ts_mean = mean_std(ref.values["ts ece"])[0]
    helps = [row for row in others if _significant(row.versus["ece"]) and row.versus["ece"][0].difference < 0
             and not (_significant(row.versus["accuracy"]) and row.versus["accuracy"][0].difference < 0)]
    beats_ts = [row for row in helps if _significant(row.versus_ts) and row.versus_ts[0].difference < 0]
    summary = f"Temperature scaling of {result.reference} (fitted on validation) reaches {100 * ts_mean:.2f} % ECE."
    if beats_ts:
        summary += (f" {', '.join(r.setting for r in beats_ts)} lowered ECE significantly below that without a "
                    "significant accuracy loss: a reason here to change β.")
    elif helps:
        summary += (f" {', '.join(r.setting for r in helps)} lowered ECE without a significant accuracy loss, but "
                    "not significantly below temperature scaling at these seeds: try temperature scaling first.")
    else:
        summary += (" No setting lowered ECE significantly at these seeds (which is not evidence that they are the "
                    "same): no reason here to change β.")
    return [*lines[:2], summary] if len(others) > 1 else [*lines, summary]


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    return ["| " + " | ".join(header) + " |", "|" + "---|" * len(header), *("| " + " | ".join(r) + " |" for r in rows)]


def write_compare_report(result: CompareResult, out: str | Path, command: str = "") -> Path:
    """``report.md`` (the verdict first), ``scores.csv`` (per seed) and ``comparisons.csv`` in ``out``."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    others = result.rows[1:]
    k = len(others)
    lines = [f"# Compare: {result.root.name}", "", "## Verdict", "", *verdict(result), "",
             f"Predictions: `{result.root}` ({len(result.rows)} settings; each setting paired by seed with "
             f"{result.reference}). Test split scored raw and after temperature scaling (TS) fitted on each seed's "
             f"validation split; ECE with {N_BINS} equal-width bins everywhere.", ""]
    if command:
        lines += ["Made with:", "", "```", command, "```", ""]
    lines += ["## Test metrics", "", "Mean ± std over seeds.", "",
              *_table(["setting", "seeds", *(c for _, c, _, _ in METRICS)],
                      [[row.setting, str(len(row.seeds)),
                        *(format_mean_std(row.values[m], s, 2 if s == 100 else 4) for m, _, s, _ in METRICS)]
                       for row in result.rows]), ""]
    if others:
        lines += [f"## Against {result.reference}", "",
                  "Δ = setting − reference, mean over seeds, with its 95 % t-interval; the paired t-test's p-value is "
                  "Holm-corrected over one family per metric.", "",
                  *_table(["setting", *(c for _, c, _, _ in METRICS)],
                          [[row.setting, *(_delta(row.versus[m], s, "") for m, _, s, _ in METRICS)] for row in others]),
                  "", f"Holm families: each column, the {k} setting(s) against {result.reference} (k = {k}).", "",
                  f"## Raw ECE against temperature scaling of {result.reference}", "",
                  *_table(["setting", f"ECE % − {result.reference}'s ECE after TS %"],
                          [[row.setting, _delta(row.versus_ts, 100, "")] for row in others]),
                  "", f"Holm family: the {k} setting(s) (k = {k}).", ""]
    lines += ["`scores.csv` holds every seed's values; `comparisons.csv` every test.", ""]
    atomic_write_bytes(out / "report.md", "\n".join(lines).encode())
    atomic_write_bytes(out / "scores.csv", _scores_csv(result).encode())
    atomic_write_bytes(out / "comparisons.csv", _comparisons_csv(result).encode())
    return out / "report.md"


def _scores_csv(result: CompareResult) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["setting", "seed", *(m for m, *_ in METRICS)])
    for row in result.rows:
        for i, seed in enumerate(row.seeds):
            writer.writerow([row.setting, seed, *(repr(row.values[m][i]) for m, *_ in METRICS)])
    return buffer.getvalue()


def _comparisons_csv(result: CompareResult) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["setting", "against", "metric", "n", "difference", "ci_low", "ci_high", "p", "holm_p", "family_k"])
    k = len(result.rows) - 1
    for row in result.rows[1:]:
        pairs = [(m, result.reference, row.versus[m]) for m, *_ in METRICS]
        pairs.append(("ece", f"{result.reference} after TS", row.versus_ts))
        for metric, against, (test, adjusted) in pairs:
            writer.writerow([row.setting, against, metric, test.n, *(repr(v) for v in (
                test.difference, test.ci_low, test.ci_high, test.p_value, adjusted)), k])
    return buffer.getvalue()
