"""gdsoftmax: the probability-dependent gradient-decay softmax loss and its experiments.

>>> import torch, gdsoftmax
>>> logits, target = torch.randn(4, 10), torch.randint(10, (4,))
>>> loss = gdsoftmax.gradient_decay_loss(logits, target, beta=0.1)
"""

from gdsoftmax import schedules, theory
from gdsoftmax.functional import gradient_decay_loss
from gdsoftmax.modules import GradientDecayLoss

__all__ = ["GradientDecayLoss", "gradient_decay_loss", "schedules", "theory"]
__version__ = "0.1.0"
