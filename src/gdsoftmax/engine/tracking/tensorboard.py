"""TensorBoard logging: ``train.log = ["tensorboard"]`` (or ``--set train.log=["tensorboard"]``)
mirrors a run into TensorBoard event files in its run directory, so ``tensorboard --logdir runs/NAME``
names each run after its cell (``beta=0.1_seed=2``) and a regex such as ``beta=0.1_`` shows one
setting's seeds together.

``metrics.jsonl`` stays the source of truth: the writer is fed each metric row after the row is
written, so TensorBoard shows exactly what the report reads. Per epoch: every numeric field of
the row (train/val/test loss, CE and accuracy, beta, lr, wall time). At the end: the run's
hyperparameters with its final test accuracy and ECE (the HParams tab: the swept keys and
``setting``, the group a setting's seeds share; β as a number or a schedule's label), the resolved
config as text, and the test set's reliability diagram with its confidence histogram as an image. A resumed run drops
the events of epochs it trains again (``purge_step``), so no curve is drawn twice.

Needs the ``tensorboard`` package (``pip install 'gdsoftmax[tensorboard]'``).
"""

from __future__ import annotations

import math
import shutil
import tempfile
from pathlib import Path

import numpy as np
import torch

from gdsoftmax.analysis import plots
from gdsoftmax.analysis.binned import ECE_BINS, reliability
from gdsoftmax.engine.config.schema import ExperimentConfig, config_to_toml
from gdsoftmax.engine.tracking.labels import RunLabels, compared_params, run_labels

__all__ = ["EVENTS", "TensorBoardLog", "discard_events", "require_tensorboard", "scalar_tag"]

SCHEDULE_FIELDS = {"beta": "schedule/beta", "lr": "schedule/lr", "wall_time": "time/wall_time_s"}


def scalar_tag(field: str) -> str:
    """A metric row's field as a TensorBoard tag: ``test_acc`` -> ``test/acc``, ``beta`` -> ``schedule/beta``."""
    if field in SCHEDULE_FIELDS:
        return SCHEDULE_FIELDS[field]
    split, _, name = field.partition("_")
    return f"{split}/{name}" if name else field


def _summary_writer():
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError as error:  # tensorboard is an optional extra: one line that names the fix
        raise ValueError("train.log = ['tensorboard'] needs the tensorboard package, which cannot be imported "
                         f"here ({error}): pip install 'gdsoftmax[tensorboard]'") from error
    return SummaryWriter


EVENTS = "events.out.tfevents.*"  # the event files TensorBoard writes into a run directory


def discard_events(run_dir: Path) -> None:
    """A restarted run's TensorBoard event files, and the ``tensorboard`` folder where older runs kept them."""
    for events in Path(run_dir).glob(EVENTS):
        events.unlink(missing_ok=True)
    shutil.rmtree(Path(run_dir) / "tensorboard", ignore_errors=True)


def require_tensorboard() -> None:
    """Fail before a run starts (and writes anything) when TensorBoard logging cannot work."""
    _summary_writer()


class TensorBoardLog:
    """The TensorBoard mirror of one run directory's metric rows (see the module docstring)."""

    def __init__(self, run_dir: str | Path, start_epoch: int = 0, labels: RunLabels | None = None):
        self.folder = Path(run_dir)
        self.labels = labels
        self.writer = _summary_writer()(log_dir=str(self.folder), purge_step=start_epoch + 1 if start_epoch else None)

    def epoch(self, row: dict) -> None:
        """Write one metric row (a dict as in metrics.jsonl) at its epoch."""
        for field, value in row.items():
            if field in ("epoch", "step") or isinstance(value, bool) or not isinstance(value, int | float):
                continue
            if math.isfinite(value):
                self.writer.add_scalar(scalar_tag(field), value, row["epoch"])
        self.writer.flush()

    def finish(self, config: ExperimentConfig, result: dict, test_logits: np.ndarray, test_labels: np.ndarray,
               n_bins: int = ECE_BINS) -> None:
        """The hyperparameters with the final metrics, and the reliability diagram; then close. A language
        model has no test logits (None): its hyperparameters go with its last validation metrics."""
        if test_logits is None:
            self.writer.add_hparams(compared_params(config, self.labels or run_labels(config)),
                                    {"final/best_val_acc": result["best_val_acc"]}, run_name=".")
            self.writer.close()
            return
        report = reliability(torch.from_numpy(test_logits).double(), torch.from_numpy(test_labels), n_bins)
        metrics = {"final/test_acc": report.accuracy, f"final/test_ece_{n_bins}bins": report.ece,
                   "final/test_mce": report.mce}
        self.writer.add_hparams(compared_params(config, self.labels or run_labels(config)), metrics, run_name=".")
        self.writer.add_text("config", "```toml\n" + config_to_toml(config) + "\n```", result["epochs"])
        with tempfile.TemporaryDirectory() as scratch:
            path = plots.reliability_diagrams([(config.name, report.bins, report.ece, report.mce)],
                                              Path(scratch) / "reliability.png",
                                              f"{config.name}: reliability and confidence histogram (test)")
            image = plots.pyplot().imread(path)[..., :3]  # (H, W, 3) floats in [0, 1]
        self.writer.add_image("calibration/reliability_and_confidence_histogram", image, result["epochs"],
                              dataformats="HWC")
        self.writer.close()

    def close(self) -> None:
        self.writer.close()
