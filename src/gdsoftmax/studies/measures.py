"""What a report measures on each finished run, once: test calibration, smECE, margins, post-hoc scaling, the
training dynamics' counts. The scalars land in ``run.metrics`` (:class:`~gdsoftmax.analysis.run_metrics.RunMetrics`,
whose names ``paper_claims.toml`` and ``runs.csv`` read), the bins and counts in ``run.measures``
(:class:`~gdsoftmax.studies.runs.RunMeasures`).

The post-hoc fits can run in a second process while the caller measures and draws the rest
(:func:`start_post_hoc`, :func:`add_post_hoc`); :func:`measure` alone fits them in this one.
"""

from __future__ import annotations

import numpy as np
import torch

from gdsoftmax.analysis import plots
from gdsoftmax.analysis.estimators import debiased_l2_ece, smooth_ece, top1
from gdsoftmax.analysis.margins import logit_margins
from gdsoftmax.analysis.metrics import calibration_metrics
from gdsoftmax.analysis.post_hoc_process import PostHocFits, post_hoc_values
from gdsoftmax.studies.epochs import CURRICULUM_EPOCH, early_epoch
from gdsoftmax.studies.runs import Run, RunMeasures

__all__ = ["add_post_hoc", "measure", "start_post_hoc"]


def _row_at(rows: list[dict], epoch: int) -> dict:
    return min(rows, key=lambda r: abs(r["epoch"] - epoch))


def _has_validation(run: Run) -> bool:
    return len(run.predictions["val_labels"]) > 0


def _post_hoc_inputs(run: Run) -> tuple[np.ndarray, ...]:
    p = run.predictions
    return p["val_logits"], p["val_labels"], p["test_logits"], p["test_labels"]


def measure(run: Run, n_bins: int, post_hoc: bool = True) -> None:
    """Per-run numbers the tables and claims need; the post-hoc scaling ones too unless ``post_hoc`` is False
    (then :func:`add_post_hoc` adds them). A run is measured once: a second call is refused."""
    if run.measures is not None:
        raise ValueError(f"{run.path} was measured already; a report measures each run once")
    test_logits = torch.from_numpy(run.predictions["test_logits"]).double()
    test_labels = torch.from_numpy(run.predictions["test_labels"])
    report = calibration_metrics(test_logits, test_labels, n_bins)
    confidence, correct = top1(test_logits, test_labels)
    metrics = run.metrics
    metrics.test_accuracy, metrics.test_ece, metrics.test_mce = report.accuracy, report.ece, report.mce
    metrics.test_adaptive_ece, metrics.test_nll, metrics.test_brier = report.adaptive_ece, report.nll, report.brier
    metrics.test_smece = smooth_ece(confidence, correct)
    metrics.test_debiased_l2_ece = debiased_l2_ece(confidence, correct, n_bins)
    metrics.overconfidence = report.mean_confidence - report.accuracy
    metrics.margin = float(logit_margins(test_logits, test_labels.long()).mean())
    if post_hoc and _has_validation(run):
        metrics.update(post_hoc_values(*_post_hoc_inputs(run), n_bins))
    metrics.train_accuracy = run.rows[-1]["train_acc"]  # the last epoch's, counted during training
    early = _row_at(run.rows, early_epoch(run.config.train.epochs))
    metrics.early_train_ce, metrics.early_test_acc = early["train_ce"], early["test_acc"]
    epochs, p_true = run.samples["epochs"], run.samples["p_true"].astype(np.float32)
    intervals = tuple(plots.interval_counts(p_true[-1]))
    metrics.low_confidence_count = float(intervals[0])  # Table 1's first row, p_c <= 0.2
    # A curriculum polarises the training set early (easy samples near 1, hard ones still low), so
    # its signature is the spread of p_c over samples; it needs no ranking by (saturated) final p_c.
    at = int(np.argmin(np.abs(epochs - CURRICULUM_EPOCH)))
    metrics.curriculum_spread = float(p_true[at].std())
    run.measures = RunMeasures(report.bins, intervals, {int(e): plots.interval_counts(p)[0]
                                                        for e, p in zip(epochs, p_true, strict=True)})


def start_post_hoc(runs: list[Run], n_bins: int, background: bool | None = None) -> PostHocFits:
    """Start fitting temperature and vector scaling of every run with a validation split (in a second process
    on a machine with more than one core); use the result as a context manager."""
    return PostHocFits([_post_hoc_inputs(run) for run in runs if _has_validation(run)], n_bins, background)


def add_post_hoc(runs: list[Run], fits: PostHocFits) -> None:
    """Put the fits :func:`start_post_hoc` started for ``runs`` into their metrics (waits for them)."""
    fitted = iter(fits.results())
    for run in runs:
        if _has_validation(run):
            run.metrics.update(next(fitted))
