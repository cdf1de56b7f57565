"""``nn.Module`` wrapper of :func:`gdsoftmax.loss.gradient_decay_loss`."""

from __future__ import annotations

import torch
from torch import nn

from gdsoftmax.loss import validation as v
from gdsoftmax.loss.functional import BACKENDS, gradient_decay_loss

__all__ = ["GradientDecayLoss"]


class GradientDecayLoss(nn.Module):
    """Drop-in replacement for ``nn.CrossEntropyLoss`` with a gradient-decay factor beta.

    ``backend`` picks the kernel as in :func:`gdsoftmax.loss.gradient_decay_loss`.
    ``beta`` is a plain attribute that a training loop may set between steps (for a
    warm-up, pass ``schedule(step)``); it is validated on assignment. ``weight`` is a
    buffer, so it follows ``.to(device)`` and is saved in ``state_dict`` as in PyTorch.

    Example:
        >>> import torch
        >>> from gdsoftmax import GradientDecayLoss
        >>> criterion = GradientDecayLoss(beta=0.1)
        >>> logits = torch.randn(8, 10, requires_grad=True)
        >>> criterion(logits, torch.randint(10, (8,))).backward()
        >>> criterion.beta = 0.5  # e.g. the next value of a warm-up schedule
    """

    def __init__(
        self,
        beta: float = 1.0,
        *,
        tau: float = 1.0,
        weight: torch.Tensor | None = None,
        ignore_index: int = -100,
        reduction: str = "mean",
        label_smoothing: float = 0.0,
        backend: str = "auto",
    ) -> None:
        super().__init__()
        self.beta = beta
        self.tau = tau
        v.check_weight(weight)
        self.register_buffer("weight", weight)
        self.ignore_index = v.check_ignore_index(ignore_index)
        self.reduction = v.check_reduction(reduction)
        self.label_smoothing = v.check_label_smoothing(label_smoothing)
        if backend not in BACKENDS:
            raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
        self.backend = backend

    @property
    def beta(self) -> float:
        return self._beta

    @beta.setter
    def beta(self, value: float) -> None:
        self._beta = v.check_positive("beta", value)

    @property
    def tau(self) -> float:
        return self._tau

    @tau.setter
    def tau(self, value: float) -> None:
        self._tau = v.check_positive("tau", value)

    def forward(self, input: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return gradient_decay_loss(
            input, target, self.beta, tau=self.tau, weight=self.weight, ignore_index=self.ignore_index,
            reduction=self.reduction, label_smoothing=self.label_smoothing, backend=self.backend,
        )

    def extra_repr(self) -> str:
        return (f"beta={self.beta:g}, tau={self.tau:g}, ignore_index={self.ignore_index}, "
                f"reduction={self.reduction!r}, label_smoothing={self.label_smoothing:g}, backend={self.backend!r}")
