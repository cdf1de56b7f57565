"""The per-run metrics a study measures, declared once: a typed row (:class:`RunMetrics`, one field per metric)
and the vocabulary of their names, which ``paper_claims.toml`` names and ``runs.csv`` heads its columns with.

A metric is a field with its name (the text a claim and a column use) and its meaning. A name outside the
vocabulary is refused where it is read, whether it comes from a claim, a table or a study's code, so a typo
cannot read an empty column. A field holds ``None`` until the run's metric is measured; a measured NaN (a
diverged run's accuracy) stays NaN.

>>> row = RunMetrics.of({"test ece": 0.031, "T": 1.4})
>>> row.test_ece, row["T"], "test nll" in row
(0.031, 1.4, False)
>>> row["test ECE"]
Traceback (most recent call last):
...
KeyError: "unknown metric 'test ECE'; the metrics are: test accuracy, test ece, ..."
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field, fields

__all__ = ["CSV_METRICS", "METRICS", "RunMetrics", "check_metric"]


def _metric(name: str, means: str, csv: bool = True):
    return field(default=None, metadata={"name": name, "means": means, "csv": csv})


@dataclass(slots=True, repr=False)  # slots: a misspelt attribute is an error, not a new field
class RunMetrics:
    """One run's measured metrics (``None``: not measured on this run); the fields in ``runs.csv``'s order."""

    # the report's test-set metrics (gdsoftmax report, every study built on it)
    test_accuracy: float | None = _metric("test accuracy", "top-1 accuracy on the test split")
    test_ece: float | None = _metric("test ece", "binned ECE on the test split (the report's bins)")
    test_mce: float | None = _metric("test mce", "binned MCE on the test split")
    test_smece: float | None = _metric("test smece", "smooth ECE (Błasiok & Nakkiran) on the test split")
    test_adaptive_ece: float | None = _metric("test adaptive_ece", "ECE over equal-mass bins on the test split")
    test_nll: float | None = _metric("test nll", "mean negative log-likelihood on the test split")
    test_brier: float | None = _metric("test brier", "Brier score on the test split")
    overconfidence: float | None = _metric("overconfidence", "mean confidence minus accuracy on the test split")
    margin: float | None = _metric("margin", "mean logit margin of the true class on the test split")
    temperature_ece: float | None = _metric("temperature ece", "test ECE after temperature scaling fitted on val")
    vector_ece: float | None = _metric("vector ece", "test ECE after vector scaling fitted on val")
    fitted_temperature: float | None = _metric("T", "the temperature fitted on the validation split")
    # training dynamics
    early_train_ce: float | None = _metric("early train_ce", "training cross-entropy at the early epoch")
    early_test_acc: float | None = _metric("early test_acc", "test accuracy at the early epoch")
    curriculum_spread: float | None = _metric("curriculum spread", "std of training p_c at the curriculum epoch")
    low_confidence_count: float | None = _metric("low confidence count", "training samples with final p_c <= 0.2")
    train_accuracy: float | None = _metric("train accuracy", "training accuracy of the last epoch")
    # the untested claims' studies (gdsoftmax study oscillation, lr, ...)
    oscillation: float | None = _metric("oscillation", "mean absolute change of test accuracy between epochs")
    diverged: float | None = _metric("diverged", "1 if the run stopped on a non-finite loss, else 0")
    epochs_to_target: float | None = _metric("epochs to target", "first epoch at the study's target accuracy")
    # language models (gdsoftmax study lm): the whole validation split, where "test" metrics hold the half of
    # it that temperature scaling does not see
    val_loss: float | None = _metric("val loss", "mean next-token loss on the validation split (nats)")
    val_accuracy: float | None = _metric("val accuracy", "top-1 accuracy on the validation split")
    val_ece: float | None = _metric("val ece", "binned ECE on the validation split")
    val_smece: float | None = _metric("val smece", "smooth ECE on the validation split")
    val_overconfidence: float | None = _metric("val overconfidence", "mean confidence minus accuracy on val")
    nats_per_character: float | None = _metric("nats per character", "validation loss per character of text")
    temperature_nll: float | None = _metric("temperature nll", "test NLL after temperature scaling")
    # the replication study: scores after temperature scaling, and the test samples in the bin MCE is read from
    temperature_mce: float | None = _metric("temperature mce", "test MCE after temperature scaling")
    temperature_smece: float | None = _metric("temperature smece", "test smooth ECE after temperature scaling")
    temperature_brier: float | None = _metric("temperature brier", "test Brier score after temperature scaling")
    mce_bin_count: float | None = _metric("mce bin count", "test samples in the bin the MCE is read from")
    # the final model's training features, within- against between-class variability (engine features)
    nc1: float | None = _metric("nc1", "within- against between-class variability of the training features")
    # measured for a report's tables, not written to runs.csv (no verdict reads them)
    test_debiased_l2_ece: float | None = _metric("test debiased_l2_ece", "debiased L2 ECE on test", csv=False)
    vector_mce: float | None = _metric("vector mce", "test MCE after vector scaling", csv=False)
    vector_nll: float | None = _metric("vector nll", "test NLL after vector scaling", csv=False)

    def __setattr__(self, attribute: str, value: float | None) -> None:
        # one type for every metric, whatever computed it (a numpy or torch scalar, an int count)
        object.__setattr__(self, attribute, None if value is None else float(value))

    def __repr__(self) -> str:
        return f"RunMetrics.of({dict(self.items())!r})"

    @classmethod
    def of(cls, values: Mapping[str, float]) -> RunMetrics:
        """The row holding ``values`` (metric name -> value); a name outside the vocabulary is refused."""
        row = cls()
        row.update(values)
        return row

    def update(self, values: Mapping[str, float]) -> None:
        """Set each named metric (as a float); a name outside the vocabulary is refused."""
        for name, value in values.items():
            self[name] = value

    def __getitem__(self, name: str) -> float:
        value = getattr(self, _FIELD[check_metric(name)])
        if value is None:
            raise KeyError(f"{name!r} was not measured on this run")
        return value

    def __setitem__(self, name: str, value: float) -> None:
        setattr(self, _FIELD[check_metric(name)], value)

    def __contains__(self, name: str) -> bool:
        return getattr(self, _FIELD[check_metric(name)]) is not None

    def get(self, name: str, default: float | None = None) -> float | None:
        value = getattr(self, _FIELD[check_metric(name)])
        return default if value is None else value

    def items(self) -> Iterator[tuple[str, float]]:
        """(name, value) of every measured metric, in the vocabulary's order."""
        for name, attribute in _FIELD.items():
            value = getattr(self, attribute)
            if value is not None:
                yield name, value

    def in_csv(self) -> RunMetrics:
        """The same row with only the metrics ``runs.csv`` holds."""
        return RunMetrics.of({name: value for name, value in self.items() if name in CSV_METRICS})

    def finite(self, name: str) -> bool:
        """Whether ``name`` was measured and is a finite number."""
        return math.isfinite(self.get(name, math.nan))


_FIELD = {f.metadata["name"]: f.name for f in fields(RunMetrics)}  # metric name -> attribute
METRICS = {f.metadata["name"]: f.metadata["means"] for f in fields(RunMetrics)}  # metric name -> what it means
CSV_METRICS = tuple(f.metadata["name"] for f in fields(RunMetrics) if f.metadata["csv"])  # runs.csv's metrics


def check_metric(name: str, where: str = "") -> str:
    """``name`` if it is a metric of the vocabulary, else a KeyError that lists them (prefixed by ``where``)."""
    if name not in _FIELD:
        raise KeyError(f"{where}unknown metric {name!r}; the metrics are: {', '.join(_FIELD)}")
    return name
