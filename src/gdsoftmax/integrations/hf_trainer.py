"""β schedules, next-token calibration and the fused β-loss inside the Hugging Face ``Trainer``.

* :class:`GradientDecayBetaCallback` sets a :class:`~gdsoftmax.integrations.hf.BetaLossForTrainer`'s β as
  the engine does: a **schedule** (a number, a :mod:`gdsoftmax.loss.schedules` object or its dict, e.g. the
  paper's warm-up ``{"kind": "linear", "start": 0.1, "end": 1.0, "steps": 1000}``) before every step from
  ``state.global_step``, so a resumed run continues it; or the **adaptive controller**
  (``{"kind": "pid", ...}``), moved after every evaluation by the gap between mean confidence and accuracy
  that :func:`next_token_metrics` adds to the metrics. Its state travels in the Trainer's checkpoints, and
  ``Trainer.train(resume_from_checkpoint=...)`` gives the controller back where it stood, with or without
  ``restore_callback_states_from_checkpoint`` (with it, the callback transformers builds anew drives the
  same loss object as the one it replaces).
* :func:`next_token_metrics` / :func:`top1_of_logits`: the Trainer's ``compute_metrics`` and
  ``preprocess_logits_for_metrics`` for next-token accuracy, mean confidence and ECE (15 bins), which keep
  two numbers per token instead of the (tokens x vocabulary) logits.
* :class:`FusedBetaLossTrainer`: a Trainer whose training loss is :func:`~gdsoftmax.integrations.hf.fused_lm_loss`
  (the LM head and the β-loss in one pass, the logits never held whole); evaluation keeps the model's logits.
* :func:`save_trainer_predictions`: after ``trainer.train()``, a sequence classifier's logits on a validation
  and a test set, saved as one seed's file for ``gdsoftmax compare`` (``SETTING/SEED.npz``).

Needs transformers (``pip install 'gdsoftmax[hf]'``).

>>> from gdsoftmax.integrations.hf import BetaLossForTrainer
>>> loss = BetaLossForTrainer()
>>> callback = GradientDecayBetaCallback({"kind": "linear", "start": 0.1, "end": 1.0, "steps": 100}, loss)
>>> callback.set_beta(50), loss.beta
(0.55, 0.55)
"""

from __future__ import annotations

try:
    from transformers import Trainer, TrainerCallback
    from transformers.trainer_callback import ExportableState
except ImportError as error:  # an optional extra: one line that names the fix
    raise ImportError("gdsoftmax.integrations.hf_trainer needs transformers: pip install 'gdsoftmax[hf]'") from error

import gc
import uuid
import weakref
from typing import ClassVar

import numpy as np
import torch

from gdsoftmax.analysis.binned import bin_sums
from gdsoftmax.analysis.predictions import save_predictions
from gdsoftmax.integrations.hf import BetaLossForTrainer, fused_lm_loss
from gdsoftmax.loss.adaptive import PIDController, schedule_or_controller

__all__ = ["FusedBetaLossTrainer", "GradientDecayBetaCallback", "next_token_metrics", "save_trainer_predictions",
           "top1_of_logits"]


class GradientDecayBetaCallback(TrainerCallback, ExportableState):
    """Drive ``loss.beta`` (a BetaLossForTrainer, or a FusedBetaLossTrainer's ``beta_loss``) by a schedule
    or the adaptive controller. ``Trainer(callbacks=[GradientDecayBetaCallback(beta, loss)])``."""

    _live: ClassVar[weakref.WeakValueDictionary] = weakref.WeakValueDictionary()  # token -> live callback

    def __init__(self, beta=1.0, loss: BetaLossForTrainer | None = None, *, replaces: str | None = None):
        self.token, self.restored = uuid.uuid4().hex, False
        if replaces is not None:  # built by transformers from state(): take over the callback it replaces
            self._take_over(replaces)
        else:
            self.schedule = schedule_or_controller(beta)
            self.adaptive = isinstance(self.schedule, PIDController)
            if self.adaptive and self.schedule.lr_compensation:
                raise ValueError("lr_compensation needs every evaluation token's p_y, which the Trainer's metrics do "
                                 "not keep; use the adaptive controller without it here (lr_compensation = false)")
            self.loss = loss if loss is not None else BetaLossForTrainer()
        type(self)._live[self.token] = self

    def _take_over(self, token: str) -> None:
        """transformers' ``restore_callback_states_from_checkpoint`` replaces each stateful callback by
        ``type(callback)(**state()["args"])``; the one it replaces is still alive and holds the loss the
        Trainer computes. Found by its token (or, in a new process, as the one live callback), its loss and
        schedule carry on here, so β keeps driving the loss that trains."""
        live = type(self)._live
        original = live.get(token)
        if original is None:
            gc.collect()  # callbacks of Trainers gone but not yet collected are not live
            others = list(live.values())
            if len(others) != 1:
                raise ValueError(f"restoring GradientDecayBetaCallback from a checkpoint found {len(others)} live "
                                 "callbacks to take over; pass one callback to the Trainer, or resume with "
                                 "restore_callback_states_from_checkpoint=False (the callback restores itself)")
            original = others[0]
        self.schedule, self.adaptive, self.loss = original.schedule, original.adaptive, original.loss
        live.pop(original.token, None)

    @property
    def controller(self) -> dict:
        """The adaptive controller's state ({} for a schedule): what a checkpoint keeps and gives back."""
        return self.schedule.state_dict() if self.adaptive else {}

    @controller.setter
    def controller(self, state: dict) -> None:
        if self.adaptive and state:
            self.schedule.load_state_dict(state)
            self.restored = True

    def set_beta(self, step: int) -> float:
        """Give the loss β at ``step`` (the controller's current β when adaptive); returns it."""
        self.loss.beta = float(self.schedule(step))
        return self.loss.beta

    def on_train_begin(self, args, state, control, **kwargs):
        if state.global_step > 0 and not self.restored:  # resumed without restoring callbacks: restore ourselves
            stored = (state.stateful_callbacks or {}).get(type(self).__name__)
            stored = stored[0] if isinstance(stored, list) and stored else stored
            if isinstance(stored, dict):
                self.restore(stored.get("attributes", {}))
        self.set_beta(state.global_step)

    def on_step_begin(self, args, state, control, **kwargs):
        self.set_beta(state.global_step)

    def on_evaluate(self, args, state, control, metrics=None, **kwargs):
        if not self.adaptive:
            return
        metrics = metrics or {}
        keys = [k for k in ("eval_confidence", "eval_accuracy") if k not in metrics]
        if keys:
            raise ValueError(f"the adaptive controller needs {keys} in the evaluation metrics: pass "
                             "compute_metrics=next_token_metrics and preprocess_logits_for_metrics=top1_of_logits "
                             "to the Trainer")
        self.schedule.update(float(metrics["eval_confidence"] - metrics["eval_accuracy"]))
        metrics["eval_beta"] = self.set_beta(state.global_step)

    # ---- checkpoints (Trainer's stateful callbacks) ----------------------------------------------------

    def state(self) -> dict:
        """What the Trainer's checkpoints keep: how to rebuild this callback (``replaces``: see
        :meth:`_take_over`) and the controller's state."""
        return {"args": {"replaces": self.token}, "attributes": {"controller": self.controller}}

    def restore(self, attributes: dict) -> None:
        """Give back the controller where a checkpoint's ``attributes`` left it."""
        self.controller = attributes.get("controller", {})


def top1_of_logits(logits, labels) -> torch.Tensor:
    """``preprocess_logits_for_metrics``: per position, the top-1 probability and the predicted token,
    (B, T, 2) instead of (B, T, V)."""
    logits = logits[0] if isinstance(logits, tuple) else logits
    confidence, prediction = torch.softmax(logits.float(), -1).max(-1)
    return torch.stack([confidence, prediction.float()], -1)


def next_token_metrics(eval_pred, n_bins: int = 15) -> dict[str, float]:
    """``compute_metrics``: accuracy, mean confidence and ECE of the next token over every labelled position
    (labels shifted one left, -100 ignored, as a causal LM's loss reads them).

    >>> top1 = np.array([[[0.9, 1.0], [0.6, 2.0], [0.5, 0.0]]])
    >>> metrics = next_token_metrics((top1, np.array([[7, 1, 3]])))
    >>> metrics["accuracy"], round(metrics["confidence"], 2), round(metrics["ece"], 2)
    (0.5, 0.75, 0.35)
    """
    top1, labels = eval_pred[0], eval_pred[1]
    confidence = torch.as_tensor(np.asarray(top1)[:, :-1, 0]).double().reshape(-1)
    prediction = torch.as_tensor(np.asarray(top1)[:, :-1, 1]).long().reshape(-1)
    target = torch.as_tensor(np.asarray(labels)[:, 1:]).long().reshape(-1)
    kept = target != -100
    confidence, correct = confidence[kept], (prediction[kept] == target[kept]).double()
    counts, conf_sums, hit_sums = bin_sums(confidence, correct, n_bins)
    ece = float((conf_sums - hit_sums).abs().sum() / counts.sum())
    return {"accuracy": float(correct.mean()), "confidence": float(confidence.mean()), "ece": ece}


class FusedBetaLossTrainer(Trainer):
    """A Trainer that trains a causal LM on the fused linear β-loss (:func:`fused_lm_loss`): the backbone's
    hidden states and the LM head's weight go into one chunked pass, so the training step never holds the
    logits. ``beta_loss`` carries β and τ (and is what :class:`GradientDecayBetaCallback` drives); evaluation
    (``return_outputs=True``) runs the model as usual, since metrics need its logits."""

    def __init__(self, *args, beta_loss: BetaLossForTrainer | None = None, **kwargs):
        super().__init__(*args, **kwargs)
        self.beta_loss = beta_loss if beta_loss is not None else BetaLossForTrainer()

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        if return_outputs:
            outputs = model(**inputs)
            return self.beta_loss(outputs, inputs["labels"], num_items_in_batch), outputs
        unwrapped = self.accelerator.unwrap_model(model)
        return fused_lm_loss(unwrapped, inputs["input_ids"], inputs["labels"], beta=self.beta_loss.beta,
                             tau=self.beta_loss.tau, attention_mask=inputs.get("attention_mask"),
                             num_items_in_batch=num_items_in_batch)


def save_trainer_predictions(trainer: Trainer, path, val_dataset, test_dataset):
    """The logits ``trainer.predict`` gives on ``val_dataset`` and ``test_dataset`` (a classifier's: one row of
    class logits per example, with its label), saved to ``path`` for ``gdsoftmax compare``; returns the path."""
    arrays = []
    for dataset in (val_dataset, test_dataset):
        output = trainer.predict(dataset)
        logits = output.predictions[0] if isinstance(output.predictions, tuple) else output.predictions
        if output.label_ids is None or np.ndim(logits) != 2:
            raise ValueError("save_trainer_predictions needs a classifier's (examples, classes) logits and the "
                             f"datasets' labels; got logits of shape {np.shape(logits)} and labels "
                             f"{'none' if output.label_ids is None else np.shape(output.label_ids)}")
        arrays += [logits, output.label_ids]
    return save_predictions(path, *arrays)
