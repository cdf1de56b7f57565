"""Every study ``gdsoftmax study KIND`` can write, in one registry that the command line, its ``--help``, the
claims ledger (which names the study that decides each claim), the study modules and the tests all read: its
builder, the registered claims its ``claims.csv`` tests, the config that runs its sweep, its title and a line of
help. A new study is one module and one entry here.

Builders are named by import path and imported when the study runs, so that the command line (and this module)
starts without the studies' imports (matplotlib, scipy, the reports).

>>> STUDIES["tau"].claims, STUDIES["tau"].config
(('tau-beta-complementary',), 'configs/fashion_mnist_tau.toml')
>>> sorted(kind for kind, study in STUDIES.items() if study.reference)
['regime']
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from pathlib import Path

__all__ = ["STUDIES", "Study", "build"]


@dataclass(frozen=True)
class Study:
    kind: str
    title: str
    builder: str  # "module:function", called as function(sweep_dir, out_dir, command=...) (and kind=, reference=)
    claims: tuple[str, ...]  # the registered claims its claims.csv tests (empty: every claim a β sweep decides)
    config: str  # a config whose sweep it reads
    help: str  # one line for `gdsoftmax study --help`
    takes_kind: bool = False  # the builder serves several kinds and is told which
    reference: bool = False  # it accepts --reference, a report folder of another regime
    features: bool = False  # it reads each run's feature geometry, which the engine measures first

    def build(self, sweep_dir: str | Path, out_dir: str | Path, *, command: str = "",
              reference: str | Path | None = None) -> Path:
        module, _, name = self.builder.partition(":")
        function = getattr(importlib.import_module(module), name)
        options = {"command": command}
        if self.takes_kind:
            options["kind"] = self.kind
        if self.reference:
            options["reference_report"] = reference
        return function(sweep_dir=sweep_dir, out_dir=out_dir, **options)


_UNTESTED = "gdsoftmax.studies.untested_report:build_study"
STUDIES = {s.kind: s for s in (
    Study("regime", "The over-confident regime", "gdsoftmax.studies.regime:build_regime_study", (),
          "configs/cifar10_overconfident.toml", "a beta sweep trained until CE is over-confident: the full report "
          "at 15 bins, whether the regime was reached, beside the paper and --reference", reference=True),
    Study("replication", "Replication against the calibration toolbox",
          "gdsoftmax.studies.replication:build_replication_study", (), "configs/replication/mnist_fcnn.toml",
          "one setting where CE is over-confident (one of configs/replication/): beta 1-50 against temperature "
          "scaling, "
          "label smoothing and FLSD-53, raw and after temperature scaling, the regime read on validation, NC1",
          features=True),
    Study("lm", "β on a language model", "gdsoftmax.studies.language_model:build_lm_study", (),
          "configs/shakespeare_char.toml", "a beta sweep of a language model on a text corpus: validation loss, "
          "perplexity, next-token accuracy and calibration before and after temperature scaling, samples"),
    Study("oscillation", "Oscillation of test accuracy at large β and high momentum", _UNTESTED,
          ("large-beta-oscillation",), "configs/fashion_mnist_oscillation.toml", "beta x momentum",
          takes_kind=True),
    Study("tau", "Temperature τ and β", _UNTESTED, ("tau-beta-complementary",), "configs/fashion_mnist_tau.toml",
          "tau x beta, and whether a tau at beta = 1 can stand in for a beta", takes_kind=True),
    Study("capacity", "Capacity and β", _UNTESTED, ("capacity-dependence",), "configs/fashion_mnist_capacity.toml",
          "width x beta", takes_kind=True),
    Study("lr", "Learning rate and β", _UNTESTED, ("small-beta-larger-lr",), "configs/fashion_mnist_lr.toml",
          "learning rate x beta", takes_kind=True),
    Study("warmup-margin", "The warm-up against A-Softmax and Center loss", _UNTESTED,
          ("warmup-vs-asoftmax-center",), "configs/fashion_mnist_warmup_margin.toml",
          "the warm-up against A-Softmax and Center loss", takes_kind=True),
)}


def build(kind: str, sweep_dir: str | Path, out_dir: str | Path, *, command: str = "",
          reference: str | Path | None = None) -> Path:
    """Write the study ``kind`` of the sweep at ``sweep_dir`` into ``out_dir``; the path of its report.md."""
    if kind not in STUDIES:
        raise ValueError(f"unknown study {kind!r}; the studies are: {', '.join(STUDIES)}")
    return STUDIES[kind].build(sweep_dir, out_dir, command=command, reference=reference)
