"""What the strategies that train one model share (:class:`gdsoftmax.engine.trainer.SingleRun` for images,
:class:`gdsoftmax.engine.language.TokenStreamRun` for token streams): loading and capturing a checkpoint's
state, the learning rate of the last step, and the optimizer step with clipping and the fp16 gradient scaler.

A subclass sets ``config``, ``model``, ``optimizer``, ``schedule``, ``scaler`` (None but for fp16) and
``generator`` (the data order's) before training.
"""

from __future__ import annotations

import torch

from gdsoftmax.engine.checkpoint import capture_rng_state, restore_rng_state

__all__ = ["OneModelRun"]


class OneModelRun:
    """Checkpoint state and the optimizer step of a strategy with one model."""

    def load(self, checkpoints) -> None:
        (checkpoint,) = checkpoints
        self.model.load_state_dict(checkpoint.model)
        self.optimizer.load_state_dict(checkpoint.optimizer)
        if self.scaler is not None and checkpoint.scaler:
            self.scaler.load_state_dict(checkpoint.scaler)
        restore_rng_state(checkpoint.rng, self.generator)
        self.schedule.load(checkpoint.schedule, checkpoint.step)

    def state(self, m: int) -> tuple[dict, dict, dict, dict, dict]:
        scaler = self.scaler.state_dict() if self.scaler is not None else {}
        return (self.model.state_dict(), self.optimizer.state_dict(), capture_rng_state(self.generator), scaler,
                self.schedule.state_dict())

    def learning_rates(self) -> list[float]:
        return [self.schedule.used]

    def _step(self, loss: torch.Tensor) -> None:
        """Backward, clip and update; with a gradient scaler for fp16."""
        clip = self.config.train.grad_clip
        self.optimizer.zero_grad(set_to_none=True)
        if self.scaler is None:
            loss.backward()
            if clip > 0:
                torch.nn.utils.clip_grad_norm_(self.model.parameters(), clip)
            self.optimizer.step()
            return
        self.scaler.scale(loss).backward()
        if clip > 0:
            self.scaler.unscale_(self.optimizer)
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), clip)
        self.scaler.step(self.optimizer)
        self.scaler.update()
