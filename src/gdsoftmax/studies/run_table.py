"""The data behind a report's verdicts: one row per run (``runs.csv`` in the report folder) with its
setting, seed, swept keys, final metrics and Table 1 counts at the recorded epochs.

Every verdict a report prints is recomputed from these rows alone
(:func:`gdsoftmax.studies.claims.verdicts_from_runs_csv`), so a reader can check it without the
runs, which are not committed. Floats are written with ``repr`` so they read back exactly.

>>> import tempfile, pathlib
>>> metrics = RunMetrics.of({"test accuracy": 0.9})
>>> row = RunRow("beta=1_seed=0", "beta=1", "β = 1", 1.0, False, 0, metrics, "mnist", "fcnn", 5)
>>> path = pathlib.Path(tempfile.mkdtemp()) / "runs.csv"
>>> write_runs_csv(path, [row])
>>> read_runs_csv(path)[0].metrics.test_accuracy
0.9
"""

from __future__ import annotations

import csv
import io
import json
from dataclasses import dataclass, field
from pathlib import Path

from gdsoftmax.analysis.files import write_text_atomically
from gdsoftmax.analysis.run_metrics import CSV_METRICS, RunMetrics
from gdsoftmax.engine.config.schema import to_dict
from gdsoftmax.studies.runs import Run

__all__ = ["METRIC_COLUMNS", "RunRow", "read_runs_csv", "swept_keys", "write_csv", "write_runs_csv"]

# the per-run metrics verdicts rest on, in the order runs.csv gives them (declared with what each means in
# gdsoftmax.analysis.run_metrics)
METRIC_COLUMNS = list(CSV_METRICS)
FIXED_COLUMNS = ["run", "group", "label", "constant_beta", "warmup", "seed", "dataset", "model", "epochs"]
SWEPT_PREFIX = "swept: "
COUNT_PREFIX = "p_c<=0.2 @ epoch "


@dataclass
class RunRow:
    run: str  # the run folder's name
    group: str  # the setting's name in the report (runs of one group differ only in seed)
    label: str  # how tables name the setting
    constant_beta: float | None
    is_warmup: bool
    seed: int
    metrics: RunMetrics = field(default_factory=RunMetrics)  # only those runs.csv holds
    dataset: str = ""
    model: str = ""
    epochs: int = 0
    swept: dict[str, str] = field(default_factory=dict)  # the swept keys' values, as JSON text
    low_counts: dict[int, int] = field(default_factory=dict)  # epoch -> training samples at p_c <= 0.2

    @classmethod
    def of(cls, run: Run, group: str, swept: list[str]) -> RunRow:
        """The row of a measured run (after :func:`gdsoftmax.studies.measures.measure`)."""
        plain = _flat(to_dict(run.config))
        return cls(run.path.name, group, run.label, run.constant_beta, run.is_warmup, run.config.seed,
                   run.metrics.in_csv(),
                   run.config.data.dataset, run.config.model.name, run.config.train.epochs,
                   {k: json.dumps(plain.get(k), default=str) for k in swept},
                   dict(run.measures.low_confidence_along_training) if run.measures else {})


def _flat(tree: dict, prefix: str = "") -> dict:
    flat = {}
    for key, value in tree.items():
        if isinstance(value, dict):
            flat.update(_flat(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def swept_keys(runs: list[Run]) -> list[str]:
    """The config keys (dotted) whose values differ between runs, name and seed aside."""
    flats = [_flat(to_dict(r.config)) for r in runs]
    keys = sorted({k for f in flats for k in f} - {"name", "seed"})
    return [k for k in keys if len({json.dumps(f.get(k), default=str, sort_keys=True) for f in flats}) > 1]


def write_runs_csv(path: str | Path, rows: list[RunRow]) -> None:
    """Write ``rows`` to ``path`` atomically (a temporary file renamed over it)."""
    swept = sorted({k for r in rows for k in r.swept})
    metrics = [k for k in METRIC_COLUMNS if any(k in r.metrics for r in rows)]
    epochs = sorted({e for r in rows for e in r.low_counts})
    header = FIXED_COLUMNS + [SWEPT_PREFIX + k for k in swept] + metrics + [f"{COUNT_PREFIX}{e}" for e in epochs]
    write_csv(path, header, [[r.run, r.group, r.label, "" if r.constant_beta is None else repr(r.constant_beta),
                              int(r.is_warmup), r.seed, r.dataset, r.model, r.epochs,
                              *(r.swept.get(k, "") for k in swept),
                              *(repr(r.metrics[k]) if k in r.metrics else "" for k in metrics),
                              *(r.low_counts.get(e, "") for e in epochs)] for r in rows])


def write_csv(path: str | Path, header: list[str], rows: list[list]) -> None:
    """A CSV file written whole or not at all: a temporary file beside it, renamed over it."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(header)
    writer.writerows(rows)
    write_text_atomically(path, buffer.getvalue())


def read_runs_csv(path: str | Path) -> list[RunRow]:
    """The rows :func:`write_runs_csv` wrote, in their order."""
    with open(path, encoding="utf-8", newline="") as handle:
        records = list(csv.DictReader(handle))
    rows = []
    for record in records:
        metrics = RunMetrics.of({k: float(v) for k, v in record.items() if k in METRIC_COLUMNS and v != ""})
        rows.append(RunRow(record["run"], record["group"], record["label"],
                           float(record["constant_beta"]) if record["constant_beta"] else None,
                           record["warmup"] == "1", int(record["seed"]),
                           metrics, record["dataset"], record["model"], int(record["epochs"]),
                           {k[len(SWEPT_PREFIX):]: v for k, v in record.items() if k.startswith(SWEPT_PREFIX)},
                           {int(k[len(COUNT_PREFIX):]): int(v) for k, v in record.items()
                            if k.startswith(COUNT_PREFIX) and v != ""}))
    return rows
