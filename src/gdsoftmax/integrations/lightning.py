"""β schedules in Lightning: a Callback that sets a :class:`~gdsoftmax.loss.GradientDecayLoss`'s β.

* A **schedule** (a number, a :mod:`gdsoftmax.loss.schedules` object or its TOML-style dict, e.g.
  the paper's warm-up ``{"kind": "linear", "start": 0.1, "end": 1.0, "steps": 1000}``): β is set
  before every training batch from ``trainer.global_step``, so a resumed fit continues the schedule
  where it stopped.
* The **adaptive controller** (:class:`gdsoftmax.loss.adaptive.PIDController`, or its dict with
  ``"kind": "pid"``): once per validation epoch, the gap between mean confidence and accuracy of
  the validation predictions moves log β by the engine's law; with ``lr_compensation`` every
  parameter group's learning rate (and its scheduler's base rate) is rescaled by
  1 / mean_i 1 / (1 + (β - 1) p_i), as the engine does. The gap and the p_i are accumulated in
  torchmetrics states, so under DDP every process sees the same β.

The controller needs the validation predictions: ``validation_step`` returns a dict with
``"logits"`` (N, K) and ``"target"`` (N,). The controller's state and the learning-rate factor are
saved in Lightning's checkpoints (``state_dict``) and restored on resume.

:class:`SavePredictions` writes, at the end of ``fit``, the model's logits on a validation and a test
DataLoader as one seed's file for ``gdsoftmax compare`` (``SETTING/SEED.npz``): the verdict for a model
trained in Lightning, with the same tests the engine's reports use.

Needs Lightning (``pip install 'gdsoftmax[lightning]'``).

>>> from gdsoftmax.loss import GradientDecayLoss
>>> criterion = GradientDecayLoss()
>>> callback = GradientDecayBeta({"kind": "linear", "start": 0.1, "end": 1.0, "steps": 100}, loss=criterion)
>>> callback.set_beta(50)
0.55
>>> criterion.beta
0.55
"""

from __future__ import annotations

try:
    from lightning.pytorch.callbacks import Callback
except ImportError as error:  # an optional extra: one line that names the fix
    raise ImportError("gdsoftmax.integrations.lightning needs Lightning: pip install 'gdsoftmax[lightning]' "
                      "(or pip install lightning)") from error

from pathlib import Path

import torch
from torchmetrics import CatMetric

from gdsoftmax.analysis.calibration_metrics import ReliabilityBins
from gdsoftmax.analysis.predictions import save_predictions
from gdsoftmax.loss.adaptive import PIDController, gradient_scale_of, schedule_or_controller
from gdsoftmax.loss.module import GradientDecayLoss

__all__ = ["GradientDecayBeta", "SavePredictions"]


class GradientDecayBeta(Callback):
    """Set a GradientDecayLoss's β from a schedule each step, or from the adaptive controller each epoch.

    ``loss`` is the criterion to drive; without it, the one ``GradientDecayLoss`` among the
    LightningModule's submodules (an error names the fix when there is none, or more than one).
    """

    def __init__(self, beta=1.0, loss: GradientDecayLoss | None = None):
        if loss is not None and not isinstance(loss, GradientDecayLoss):  # it has no β to drive
            raise TypeError(f"GradientDecayBeta drives a gdsoftmax.loss.GradientDecayLoss, got "
                            f"{type(loss).__name__}; train with GradientDecayLoss(beta=...) (β = 1 is "
                            "cross-entropy) and pass it as loss=")
        self.schedule = schedule_or_controller(beta)
        self.adaptive = isinstance(self.schedule, PIDController)
        self.loss = loss
        self.lr_factor = 1.0
        self._bins = ReliabilityBins(n_bins=1)  # mean confidence and accuracy, synced across processes
        self._p_true = CatMetric()  # p_y of every validation sample, for the lr compensation

    # ---- β ----------------------------------------------------------------------------------------------

    def set_beta(self, step: int) -> float:
        """Give the loss β at ``step`` (the controller's current β when adaptive); returns it."""
        self.loss.beta = float(self.schedule(step))
        return self.loss.beta

    def setup(self, trainer, pl_module, stage: str) -> None:
        if self.loss is None:
            found = [m for m in pl_module.modules() if isinstance(m, GradientDecayLoss)]
            if len(found) != 1:
                raise ValueError(f"GradientDecayBeta found {len(found)} GradientDecayLoss modules in "
                                 f"{type(pl_module).__name__}: pass the one to drive, "
                                 "GradientDecayBeta(beta, loss=...)")
            self.loss = found[0]
        self.set_beta(trainer.global_step)

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        self.set_beta(trainer.global_step)

    # ---- the adaptive controller ----------------------------------------------------------------------

    def on_validation_epoch_start(self, trainer, pl_module) -> None:
        if self.adaptive:
            self._bins.reset()
            self._p_true.reset()

    def on_validation_batch_end(self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0) -> None:
        if not self.adaptive or trainer.sanity_checking:
            return
        if not isinstance(outputs, dict) or "logits" not in outputs or "target" not in outputs:
            raise ValueError("the adaptive controller needs the validation predictions: return "
                             "{'logits': logits, 'target': target} from validation_step")
        logits, target = outputs["logits"].detach(), outputs["target"].detach()
        scaled = logits.double() / self.loss.tau
        self._bins.to(logits.device).update(scaled, target)
        # Metric.to() resets an aggregation metric's dtype to float32: set it again after the move
        self._p_true.to(logits.device).set_dtype(torch.float64)
        self._p_true.update(scaled.softmax(1).gather(1, target.long()[:, None]).squeeze(1))

    def on_validation_epoch_end(self, trainer, pl_module) -> None:
        if not self.adaptive or trainer.sanity_checking or not self._bins.update_called:
            return
        _, confidence, accuracy = self._bins.compute()  # one bin: the means over every process's data
        beta = self.schedule.update(float(confidence - accuracy))
        self.set_beta(trainer.global_step)
        pl_module.log("gdsoftmax/beta", beta, sync_dist=False)
        if self.schedule.lr_compensation:
            factor = 1.0 / gradient_scale_of(self._p_true.compute(), beta)
            self._rescale_learning_rates(trainer, factor / self.lr_factor)
            self.lr_factor = factor

    @staticmethod
    def _rescale_learning_rates(trainer, ratio: float) -> None:
        for optimizer in trainer.optimizers:
            for group in optimizer.param_groups:
                group["lr"] *= ratio
        for config in trainer.lr_scheduler_configs:  # schedulers that recompute lr from base_lrs keep the factor
            if hasattr(config.scheduler, "base_lrs"):
                config.scheduler.base_lrs = [lr * ratio for lr in config.scheduler.base_lrs]

    # ---- checkpoints -----------------------------------------------------------------------------------

    def state_dict(self) -> dict:
        state = {"lr_factor": self.lr_factor}
        if self.adaptive:
            state["controller"] = self.schedule.state_dict()
        return state

    def load_state_dict(self, state_dict: dict) -> None:
        self.lr_factor = float(state_dict.get("lr_factor", 1.0))
        if self.adaptive and "controller" in state_dict:
            self.schedule.load_state_dict(state_dict["controller"])



class SavePredictions(Callback):
    """At the end of ``fit``, save the model's logits on ``val`` and ``test`` (DataLoaders of ``(inputs,
    targets)`` batches; the logits are ``pl_module(inputs)``) to ``path``, ``SETTING/SEED.npz`` under the folder
    that ``gdsoftmax compare`` reads. The validation split fits temperature scaling there; test is scored.

    >>> callback = SavePredictions("predictions/beta=2/0.npz", val=[], test=[])
    >>> str(callback.path)
    'predictions/beta=2/0.npz'
    """

    def __init__(self, path, val, test):
        self.path, self.val, self.test = Path(path), val, test

    def on_fit_end(self, trainer, pl_module) -> None:
        if not trainer.is_global_zero:  # every process holds the whole loaders: one writes
            return
        was_training = pl_module.training
        pl_module.eval()
        try:
            (val_logits, val_labels), (test_logits, test_labels) = (_logits_of(pl_module, loader)
                                                                    for loader in (self.val, self.test))
        finally:
            pl_module.train(was_training)
        save_predictions(self.path, val_logits, val_labels, test_logits, test_labels)


@torch.no_grad()
def _logits_of(module, loader) -> tuple[torch.Tensor, torch.Tensor]:
    logits, labels = [], []
    for inputs, targets in loader:
        logits.append(module(inputs.to(module.device)).float().cpu())
        labels.append(targets.cpu())
    if not logits:
        raise ValueError("SavePredictions: a DataLoader gave no batches; pass the validation and test loaders")
    return torch.cat(logits), torch.cat(labels)
