"""``gdsoftmax study regime``: a β sweep read where the paper's calibration claim lives, in networks
trained until cross-entropy is over-confident (issue 27).

It writes the sweep's full report (:func:`gdsoftmax.studies.report.build_report`, 15 bins: every
metric, post-hoc scaling per β, reliability diagrams, the registered claims) and adds what the
regime question needs: first, whether the β = 1 runs reached the regime (training accuracy ≥ 99 %,
test ECE ≥ 3 % and mean confidence − accuracy ≥ +3 points) and by how much they fell short if not;
then one table with ECE at 10 and 15 bins beside the paper's Table 3 row and a reference study of
another regime (the 8-epoch CIFAR-10 report), and where ECE's minimum in β lies, seed by seed.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import torch

from gdsoftmax.analysis.metrics import calibration_metrics
from gdsoftmax.analysis.paper import lookup, setting_key
from gdsoftmax.analysis.stats import format_mean_std
from gdsoftmax.loss.schedules import describe_beta
from gdsoftmax.studies.factorial import mean_cell
from gdsoftmax.studies.markdown import markdown_table
from gdsoftmax.studies.report import Additions, build_report
from gdsoftmax.studies.run_table import RunRow, read_runs_csv
from gdsoftmax.studies.runs import Run

__all__ = ["REGIME", "build_regime_study", "regime_shortfalls"]

# (value in runs.csv, threshold, how the report names it): the regime the β = 1 runs must reach
REGIME = (("train accuracy", 0.99, "training accuracy"), ("test ece", 0.03, "test ECE (15 bins)"),
          ("overconfidence", 0.03, "mean confidence − accuracy"))


def regime_shortfalls(reference: list[RunRow]) -> list[str]:
    """How the mean over ``reference`` (the β = 1 runs) falls short of each threshold; empty when reached.

    >>> from gdsoftmax.analysis.run_metrics import RunMetrics
    >>> from gdsoftmax.studies.run_table import RunRow
    >>> metrics = RunMetrics(train_accuracy=0.995, test_ece=0.02, overconfidence=0.04)
    >>> runs = [RunRow("r", "g", "β = 1", 1.0, False, 0, metrics)]
    >>> regime_shortfalls(runs)
    ['test ECE (15 bins) 2.00 % < 3 %']
    """
    shortfalls = []
    for key, threshold, name in REGIME:
        mean = sum(r.metrics[key] for r in reference) / len(reference)
        if not mean >= threshold:
            shortfalls.append(f"{name} {100 * mean:.2f} % < {100 * threshold:g} %")
    return shortfalls


def build_regime_study(sweep_dir: str | Path, out_dir: str | Path, *, command: str = "",
                       reference_report: str | Path | None = None) -> Path:
    """Write the regime study into ``out_dir``: the sweep's report with the regime's verdict, its table beside
    the paper and where ECE is lowest; ``reference_report`` is a report folder of the same data set in another
    regime (its runs.csv is read), set beside this one."""
    other = read_runs_csv(Path(reference_report) / "runs.csv") if reference_report else []
    other_name = Path(reference_report).name if reference_report else ""

    def additions(runs: list[Run], rows: list[RunRow]) -> Additions:
        reference = [r for r in rows if r.constant_beta == 1.0]
        if not reference:
            raise ValueError(f"{sweep_dir} has no β = 1 runs: the regime is defined by them")
        shortfalls = regime_shortfalls(reference)
        header = _regime_lines(reference, shortfalls)
        coarse = {run.path.name: calibration_metrics(torch.from_numpy(run.predictions["test_logits"]).double(),
                                                     torch.from_numpy(run.predictions["test_labels"]), 10).ece
                  for run in runs}
        lead = header[:1] if shortfalls else []  # a regime not reached qualifies every verdict: it leads
        return Additions(lead, header[len(lead):], _beside(rows, coarse, other, other_name) + _minimum(rows))

    return build_report(sweep_dir, out_dir, n_bins=15, command=command, additions=additions)


def _regime_lines(reference: list[RunRow], shortfalls: list[str]) -> list[str]:
    reached = (f"training accuracy {mean_cell(reference, 'train accuracy', 100)} %, test ECE (15 bins) "
               f"{mean_cell(reference, 'test ece', 100)} %, confidence − accuracy "
               f"{mean_cell(reference, 'overconfidence', 100)} points")
    target = "; ".join(f"{name} ≥ {100 * threshold:g} %" for _, threshold, name in REGIME)
    if shortfalls:
        return [f"**The regime was NOT reached: these runs are not the over-confident regime and no verdict below "
                f"speaks for it.** β = 1 (mean over its {len(reference)} runs): {reached}. Short of the target "
                f"({target}): {'; '.join(shortfalls)}.", ""]
    return [f"**Regime reached by β = 1** (mean over its {len(reference)} runs; target {target}): {reached}.", ""]


def _beside(rows: list[RunRow], coarse: dict[str, float], other: list[RunRow], other_name: str) -> list[str]:
    """β by β: this study, the other regime's study and the paper's Table 3 row (CIFAR-10, ResNet18)."""
    dataset = rows[0].dataset
    groups: dict[str, list[RunRow]] = {}
    for row in rows:
        groups.setdefault(row.group, []).append(row)
    theirs: dict[str, list[RunRow]] = {}
    for row in other:
        theirs.setdefault(row.label, []).append(row)
    header = ["setting", "train acc %", "test acc %", "ECE % (10 bins)", "ECE % (15 bins)", "smECE %",
              "conf − acc (points)", "ECE % after temp. scaling (15 bins)",
              f"{other_name}: train / test acc %, ECE % (10 bins)" if other_name else "other regime",
              "paper ECE % (ICLR Table 3, ResNet18, 10 bins)"]
    table = []
    for group in groups.values():
        ece10 = [coarse[r.run] for r in group]
        beta = group[0].constant_beta
        paper = lookup(dataset, "resnet18", "ECE (10 bins)", setting_key(beta)) if beta is not None else []
        table.append([group[0].label, mean_cell(group, "train accuracy", 100), mean_cell(group, "test accuracy", 100),
                      format_mean_std(ece10, 100),
                      mean_cell(group, "test ece", 100), mean_cell(group, "test smece", 100),
                      mean_cell(group, "overconfidence", 100), mean_cell(group, "temperature ece", 100),
                      _other_cell(theirs.get(group[0].label, [])),
                      f"{100 * paper[0].value:.1f}" if paper else "—"])
    scaled = lookup(dataset, "resnet18", "ECE (10 bins)", "temperature scaling")
    return ["## The regime beside the paper and beside a short run", "",
            "Mean ± std over seeds. The paper's column is its Table 3 CIFAR-10 ResNet18 row (200 epochs; "
            "it does not say which β its temperature scaling column was fitted to: "
            f"{100 * scaled[0].value:.1f} %)." if scaled else "Mean ± std over seeds.", "",
            markdown_table(header, table), ""]


def _other_cell(group: list[RunRow]) -> str:
    if not group or "train accuracy" not in group[0].metrics:
        return "—" if not group else (f"— / {mean_cell(group, 'test accuracy', 100)}, "
                                      f"{mean_cell(group, 'test ece', 100)}")
    return (f"{mean_cell(group, 'train accuracy', 100)} / {mean_cell(group, 'test accuracy', 100)}, "
            f"{mean_cell(group, 'test ece', 100)}")


def _minimum(rows: list[RunRow]) -> list[str]:
    """Per seed, the constant β with the lowest test ECE."""
    by_seed: dict[int, list[RunRow]] = {}
    for row in rows:
        if row.constant_beta is not None:
            by_seed.setdefault(row.seed, []).append(row)
    lowest = {seed: min(group, key=lambda r: r.metrics["test ece"]).constant_beta for seed, group in by_seed.items()}
    counts = Counter(lowest.values())
    return ["## Where ECE is lowest in β", "",
            "Per seed, the constant β whose test ECE (15 bins) is lowest: "
            + ", ".join(f"seed {s}: {describe_beta(b)}" for s, b in sorted(lowest.items()))
            + f" ({'; '.join(f'{describe_beta(b)} for {n} seed(s)' for b, n in counts.most_common())}).", ""]
