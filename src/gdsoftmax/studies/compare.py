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
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from gdsoftmax.analysis.binned import ECE_BINS, top1_of_logits
from gdsoftmax.analysis.estimators import smooth_ece
from gdsoftmax.analysis.files import write_text_atomically
from gdsoftmax.analysis.metrics import calibration_metrics
from gdsoftmax.analysis.predictions import load_predictions, save_predictions
from gdsoftmax.analysis.scaling import fit_temperature
from gdsoftmax.analysis.stats import Comparison, format_mean_std, holm, mean_std, paired_comparison
from gdsoftmax.studies.bottom_line import Setting, delta_text, verdict_lines
from gdsoftmax.studies.markdown import markdown_table

__all__ = ["N_BINS", "CompareResult", "compare", "save_predictions", "write_compare_report"]

N_BINS = ECE_BINS
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


def verdict(result: CompareResult) -> list[str]:
    """One to three sentences derived from the comparisons (:func:`gdsoftmax.studies.bottom_line.verdict_lines`)."""
    settings = [Setting(row.setting, len(row.seeds), row.versus["ece"], row.versus["accuracy"], row.versus_ts)
                for row in result.rows[1:]]
    return verdict_lines(settings, result.reference, mean_std(result.rows[0].values["ts ece"])[0])


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
              markdown_table(["setting", "seeds", *(c for _, c, _, _ in METRICS)],
                      [[row.setting, str(len(row.seeds)),
                        *(format_mean_std(row.values[m], s, 2 if s == 100 else 4) for m, _, s, _ in METRICS)]
                       for row in result.rows]), ""]
    if others:
        lines += [f"## Against {result.reference}", "",
                  "Δ = setting − reference, mean over seeds, with its 95 % t-interval; the paired t-test's p-value is "
                  "Holm-corrected over one family per metric.", "",
                  markdown_table(["setting", *(c for _, c, _, _ in METRICS)],
                          [[row.setting, *(delta_text(row.versus[m], s, "", 2 if s == 100 else 4)
                                           for m, _, s, _ in METRICS)] for row in others]),
                  "", f"Holm families: each column, the {k} setting(s) against {result.reference} (k = {k}).", "",
                  f"## Raw ECE against temperature scaling of {result.reference}", "",
                  markdown_table(["setting", f"ECE % − {result.reference}'s ECE after TS %"],
                          [[row.setting, delta_text(row.versus_ts, 100, "")] for row in others]),
                  "", f"Holm family: the {k} setting(s) (k = {k}).", ""]
    lines += ["`scores.csv` holds every seed's values; `comparisons.csv` every test.", ""]
    write_text_atomically(out / "report.md", "\n".join(lines))
    write_text_atomically(out / "scores.csv", _scores_csv(result))
    write_text_atomically(out / "comparisons.csv", _comparisons_csv(result))
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
