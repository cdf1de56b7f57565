"""The paper's own numbers, as data: every value of its tables with the version, table and row it
comes from (``paper_numbers.toml`` beside this file), for reports to set beside ours.

>>> [(n.version, n.table, n.value) for n in lookup("cifar10", "resnet18", "ECE (10 bins)", "0.1")]
[('ICLR 2024 submission', 'Table 3', 0.045)]
>>> lookup("mnist", "fcnn", "training samples with p_c in the interval (0, 0.2]", "0.001")[0].value
2375
"""

from __future__ import annotations

import functools
import tomllib
from dataclasses import dataclass
from pathlib import Path

from gdsoftmax.loss.schedules import describe_beta

__all__ = ["PaperNumber", "has_model", "lookup", "paper_numbers", "setting_key"]

SOURCE = Path(__file__).with_name("paper_numbers.toml")


@dataclass(frozen=True)
class PaperNumber:
    """One printed value: where it comes from and what it measures."""

    version: str  # "arXiv v1" or "ICLR 2024 submission"
    table: str  # "Table 3"
    dataset: str
    model: str
    metric: str  # "top-1 accuracy %", "ECE (10 bins)", ...
    setting: str  # beta as printed ("0.1"), or a named method ("warm-up", "A-Softmax", "temperature scaling")
    value: float
    note: str = ""

    @property
    def citation(self) -> str:
        return f"{self.version}, {self.table}"


@functools.cache
def paper_numbers() -> tuple[PaperNumber, ...]:
    """Every value of every transcribed table, one record each."""
    tables = tomllib.loads(SOURCE.read_text(encoding="utf-8"))["tables"]
    numbers = []
    for t in tables:
        for row in t["rows"]:
            if len(row["values"]) != len(t["columns"]):
                raise ValueError(f"{SOURCE}: {t['version']} {t['table']}: a row has {len(row['values'])} values "
                                 f"for {len(t['columns'])} columns")
            metric = row.get("measure", t["metric"])
            if "interval" in row:
                metric = f"{t['metric']} {row['interval']}"
            for setting, value in zip(t["columns"], row["values"], strict=True):
                numbers.append(PaperNumber(t["version"], t["table"], row.get("dataset", t.get("dataset", "")),
                                           row.get("model", t.get("model", "")), metric, setting, value,
                                           t.get("note", "")))
    return tuple(numbers)


def setting_key(beta) -> str:
    """How a constant beta is written in the paper's columns: 0.1 -> "0.1", 5.0 -> "5"."""
    return describe_beta(beta, symbol=False)


def lookup(dataset: str, model: str | None, metric: str, setting: str,
           version: str | None = None) -> list[PaperNumber]:
    """The printed values for one setting (both versions unless ``version`` is given; every model
    the paper ran on ``dataset`` when ``model`` is None)."""
    return [n for n in paper_numbers() if n.dataset == dataset and model in (None, n.model) and n.metric == metric
            and n.setting == setting and (version is None or n.version == version)]


def has_model(dataset: str, model: str) -> bool:
    """Whether the paper prints any number for ``model`` on ``dataset``."""
    return any(n.dataset == dataset and n.model == model for n in paper_numbers())
