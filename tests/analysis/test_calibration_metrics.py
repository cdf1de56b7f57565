"""The calibration Metrics against float64 references written from their formulas, batched against one-shot,
and in a 2-process gloo run against one process on the union of the data."""

from __future__ import annotations

import itertools
import json
import math

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st
from torchmetrics.functional.classification import multiclass_calibration_error

from gdsoftmax.analysis.calibration_metrics import (
    AdaptiveCalibrationError,
    BrierScore,
    CalibrationMetrics,
    ClasswiseCalibrationError,
    DebiasedL2CalibrationError,
    NegativeLogLikelihood,
    ReliabilityBins,
    SmoothCalibrationError,
    TopLabelCalibrationError,
)
from gdsoftmax.analysis.metrics import calibration_metrics


def predictions(n=600, k=7, scale=3.0, seed=0):
    g = torch.Generator().manual_seed(seed)
    labels = torch.randint(k, (n,), generator=g)
    logits = scale * torch.randn(n, k, generator=g, dtype=torch.float64) + 2 * F.one_hot(labels, k)
    return logits, labels


def reference(logits, labels, n_bins):
    """Every metric by a direct loop over samples and bins, from the formulas (float64, Python floats)."""
    probs = logits.softmax(1).tolist()
    y = labels.tolist()
    n, k = len(y), len(probs[0])
    top = [(max(p), int(max(range(k), key=p.__getitem__) == t)) for p, t in zip(probs, y, strict=True)]

    def bin_of(value):  # ((m-1)/M, m/M], 0 in the first
        return max(0, math.ceil(value * n_bins) - 1)

    def binned(pairs):
        bins = [[] for _ in range(n_bins)]
        for conf, hit in pairs:
            bins[bin_of(conf)].append((conf, hit))
        return [b for b in bins if b]

    def gap(b):
        return abs(sum(h for _, h in b) / len(b) - sum(c for c, _ in b) / len(b))

    def debiased(b):
        acc, conf = sum(h for _, h in b) / len(b), sum(c for c, _ in b) / len(b)
        return len(b) / n * ((acc - conf) ** 2 - (acc * (1 - acc) / (len(b) - 1) if len(b) > 1 else 0.0))

    ordered = sorted(top)
    chunks = [ordered[i * n // n_bins:(i + 1) * n // n_bins] for i in range(n_bins)]  # n divisible here
    classwise = [sum(len(b) / n * gap(b) for b in binned([(p[c], int(t == c)) for p, t in zip(probs, y, strict=True)]))
                 for c in range(k)]
    return {"ece": sum(len(b) / n * gap(b) for b in binned(top)),
            "debiased": math.sqrt(max(0.0, sum(debiased(b) for b in binned(top)))),
            "adaptive": sum(abs(sum(h for _, h in c) - sum(f for f, _ in c)) for c in chunks) / n,
            "classwise": sum(classwise) / k,
            "nll": -sum(math.log(p[t]) for p, t in zip(probs, y, strict=True)) / n,
            "brier": sum(sum((q - (c == t)) ** 2 for c, q in enumerate(p)) for p, t in zip(probs, y, strict=True)) / n}


@pytest.mark.parametrize("scale", [0.5, 3.0])
@pytest.mark.parametrize("n_bins", [10, 15])
def test_each_metric_matches_its_formula(scale, n_bins):
    logits, labels = predictions(n=600, scale=scale)
    expected = reference(logits, labels, n_bins)
    metrics = {"ece": TopLabelCalibrationError(n_bins), "debiased": DebiasedL2CalibrationError(n_bins),
               "adaptive": AdaptiveCalibrationError(n_bins), "classwise": ClasswiseCalibrationError(7, n_bins),
               "nll": NegativeLogLikelihood(), "brier": BrierScore()}
    for name, metric in metrics.items():
        for start in range(0, 600, 128):  # batched, as a training loop feeds them
            metric.update(logits[start:start + 128], labels[start:start + 128])
        assert float(metric.compute()) == pytest.approx(expected[name], rel=1e-9, abs=1e-12), name


def test_ece_and_mce_are_torchmetrics_multiclass_values():
    logits, labels = predictions(n=2000, scale=3.0, seed=4)
    probs = logits.softmax(1)
    assert probs.max() < 1.0  # where the float32 rounding of the multiclass class cannot move a bin
    for norm in ("l1", "max"):
        metric = TopLabelCalibrationError(15, norm)
        metric.update(logits, labels)
        expected = multiclass_calibration_error(probs, labels, num_classes=7, n_bins=15, norm=norm)
        assert float(metric.compute()) == pytest.approx(expected.item(), abs=1e-6)


def test_smooth_ece_is_relplots_on_the_top1_predictions():
    relplot = pytest.importorskip("relplot")
    logits, labels = predictions(n=500, seed=2)
    metric = SmoothCalibrationError()
    metric.update(logits[:200], labels[:200])
    metric.update(logits[200:], labels[200:])
    confidence, prediction = logits.softmax(1).max(1)
    expected = relplot.smECE(confidence.numpy(), (prediction == labels).double().numpy())
    assert float(metric.compute()) == pytest.approx(float(expected), rel=1e-9)


def test_reliability_bins_and_probabilities_input():
    probs = torch.tensor([[1.0, 0.0], [0.5, 0.5], [0.2, 0.8]], dtype=torch.float64)
    bins = ReliabilityBins(n_bins=4, from_logits=False)
    bins.update(probs, torch.tensor([0, 1, 1]))
    counts, confidence, accuracy = bins.compute()
    assert counts.tolist() == [0, 1, 0, 2]  # 0.5 -> (0.25, 0.5]; 0.8 and 1.0 -> (0.75, 1]
    assert confidence[3].item() == pytest.approx(0.9)
    assert accuracy[3].item() == 1.0
    assert math.isnan(confidence[0].item())


@settings(max_examples=10, deadline=None)
@given(cuts=st.lists(st.integers(1, 199), max_size=5, unique=True))
def test_batches_do_not_change_the_report(cuts):
    logits, labels = predictions(n=200, k=5, seed=7)
    whole = calibration_metrics(logits, labels, 10)
    metrics = CalibrationMetrics(5, 10)
    edges = [0, *sorted(cuts), 200]
    for start, end in itertools.pairwise(edges):
        metrics.update(logits[start:end], labels[start:end])
    batched = metrics.report()
    for key, value in whole.as_dict().items():
        assert getattr(batched, key) == pytest.approx(value, rel=1e-9, abs=1e-12), key


@pytest.mark.parametrize(("make", "message"), [
    (lambda: ReliabilityBins(n_bins=0), "n_bins must be >= 1, got 0"),
    (lambda: AdaptiveCalibrationError(n_bins=0), "n_bins must be >= 1, got 0"),
    (lambda: CalibrationMetrics(1), "num_classes must be >= 2, got 1"),
])
def test_bad_options(make, message):
    with pytest.raises(ValueError, match=message):
        make()


@pytest.mark.filterwarnings("ignore:The ``compute`` method of metric")
def test_bad_shapes_and_no_samples():
    with pytest.raises(ValueError, match=r"expected preds of shape \(N, K\), got \(4,\)"):
        BrierScore().update(torch.zeros(4), torch.zeros(4, dtype=torch.long))
    with pytest.raises(ValueError, match=r"expected target of shape \(4,\), got \(3,\)"):
        NegativeLogLikelihood().update(torch.zeros(4, 2), torch.zeros(3, dtype=torch.long))
    with pytest.raises(ValueError, match=r"expected preds of shape \(N, 3\), got \(4, 2\)"):
        ClasswiseCalibrationError(3).update(torch.zeros(4, 2), torch.zeros(4, dtype=torch.long))
    with pytest.raises(ValueError, match="no samples were accumulated"):
        AdaptiveCalibrationError().compute()


# ---- two processes over gloo against one process on the union -------------------------------------------

SPLIT = 230  # uneven shards: rank 0 gets 230 samples, rank 1 gets 370


def _distributed_worker(rank: int, init_file: str, out_dir: str) -> None:
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=2)
    try:
        logits, labels = predictions(n=600)
        shard = slice(0, SPLIT) if rank == 0 else slice(SPLIT, None)
        metrics = CalibrationMetrics(7, 15)
        smooth = SmoothCalibrationError()
        for start in range(shard.start, shard.stop or 600, 100):
            end = min(start + 100, shard.stop or 600)
            metrics.update(logits[start:end], labels[start:end])
            smooth.update(logits[start:end], labels[start:end])
        values = metrics.report().as_dict()
        values["smece"] = float(smooth.compute())
        with open(f"{out_dir}/rank{rank}.json", "w") as handle:
            json.dump(values, handle)
    finally:
        dist.destroy_process_group()


@pytest.mark.slow  # two gloo processes (10 s); make test-all
def test_two_gloo_processes_equal_one_process_on_the_union(tmp_path):
    pytest.importorskip("relplot")
    mp.spawn(_distributed_worker, args=(str(tmp_path / "init"), str(tmp_path)), nprocs=2, join=True)
    logits, labels = predictions(n=600)
    expected = calibration_metrics(logits, labels, 15).as_dict()
    smooth = SmoothCalibrationError()
    smooth.update(logits, labels)
    expected["smece"] = float(smooth.compute())
    for rank in (0, 1):
        got = json.loads((tmp_path / f"rank{rank}.json").read_text())
        assert got["n"] == 600
        for key, value in expected.items():
            assert got[key] == pytest.approx(value, rel=1e-9, abs=1e-12), (rank, key)


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -float("inf")])
def test_a_non_finite_score_is_an_error_naming_it_not_a_wrong_number(bad):
    from gdsoftmax.analysis.metrics import calibration_metrics

    logits = torch.randn(50, 4, generator=torch.Generator().manual_seed(0))
    logits[17, 2] = bad
    labels = torch.randint(4, (50,), generator=torch.Generator().manual_seed(1))
    with pytest.raises(ValueError, match=r"preds holds 1 non-finite value\(s\) .* in 1 row\(s\), the first row 17"):
        calibration_metrics(logits, labels)
    metric = TopLabelCalibrationError(n_bins=15)
    with pytest.raises(ValueError, match="non-finite"):
        metric.update(logits, labels)


@pytest.mark.parametrize("norm", ["l1", "max"])
def test_the_engines_binned_error_is_torchmetrics_to_the_last_bit(norm):
    """The training loop's per-epoch ECE does not import torchmetrics: it must give torchmetrics' very number,
    edges and confidences of exactly 1 included."""
    from torchmetrics.functional.classification import binary_calibration_error

    from gdsoftmax.analysis.binned import binned_calibration_error

    generator = torch.Generator().manual_seed(0)
    confidence = torch.rand(2000, generator=generator, dtype=torch.float64)
    confidence[:40] = torch.linspace(0, 1, 16, dtype=torch.float64).repeat(3)[:40]  # bin edges, 0 and 1
    correct = (torch.rand(2000, generator=generator) < confidence).long()
    for n_bins in (1, 10, 15):
        ours = binned_calibration_error(confidence, correct, n_bins, norm)
        theirs = float(binary_calibration_error(confidence, correct, n_bins=n_bins, norm=norm))
        assert ours == theirs


@pytest.mark.parametrize(("n", "k", "n_bins", "scale"), [(500, 10, 15, 3.0), (64, 3, 10, 0.5), (1000, 100, 15, 8.0),
                                                       (7, 2, 1, 1.0)])
def test_the_function_and_the_metric_collection_give_the_same_report(n, k, n_bins, scale):
    """calibration_metrics computes without torchmetrics; CalibrationMetrics accumulates through it. Every field
    of the report must agree (to the last bits, up to summation order), on logits and on probabilities."""
    generator = torch.Generator().manual_seed(n + k)
    logits = scale * torch.randn(n, k, generator=generator, dtype=torch.float64)
    labels = torch.randint(k, (n,), generator=generator)
    for scores, from_logits in ((logits, True), (logits.softmax(1), False)):
        collection = CalibrationMetrics(k, n_bins, from_logits)
        for chunk in range(0, n, 97):  # in batches, as a loop would feed it
            collection.update(scores[chunk:chunk + 97], labels[chunk:chunk + 97])
        got, want = calibration_metrics(scores, labels, n_bins, from_logits), collection.report()
        for field in ("n", "accuracy", "top5_accuracy", "ece", "mce", "adaptive_ece", "classwise_ece", "nll", "brier",
                      "mean_confidence"):
            assert getattr(got, field) == pytest.approx(getattr(want, field), rel=1e-12, abs=1e-15), field
        assert torch.equal(got.bins.counts, want.bins.counts)
        torch.testing.assert_close(got.bins.accuracy, want.bins.accuracy, equal_nan=True)


def test_the_functional_report_does_not_import_torchmetrics():
    import subprocess
    import sys

    code = ("import sys, torch; from gdsoftmax.analysis.metrics import calibration_metrics; "
            "calibration_metrics(torch.randn(5, 3), torch.tensor([0, 1, 2, 0, 1])); "
            "from gdsoftmax.studies import report, replication, compare; "
            "sys.exit(3 if 'torchmetrics' in sys.modules else 0)")
    assert subprocess.run([sys.executable, "-c", code], timeout=300).returncode == 0
