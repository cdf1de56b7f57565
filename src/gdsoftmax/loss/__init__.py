"""The β-loss layer: kernels, the functional form, the module, schedules (and the adaptive controller) and theory.

Nothing here imports from the rest of gdsoftmax; it needs only torch (and numpy).

>>> import torch
>>> from gdsoftmax.loss import gradient_decay_loss
>>> gradient_decay_loss(torch.randn(4, 10), torch.randint(10, (4,)), beta=0.1).shape
torch.Size([])
"""

from gdsoftmax.loss import schedules, theory
from gdsoftmax.loss.functional import BACKENDS, gradient_decay_loss, supported_backends
from gdsoftmax.loss.module import GradientDecayLoss

__all__ = ["BACKENDS", "GradientDecayLoss", "gradient_decay_loss", "schedules", "supported_backends", "theory"]
