"""gdsoftmax: the probability-dependent gradient-decay softmax loss and its experiments.

>>> import torch, gdsoftmax
>>> logits, target = torch.randn(4, 10), torch.randint(10, (4,))
>>> loss = gdsoftmax.gradient_decay_loss(logits, target, beta=0.1)

The layers, each importing only from those before it: :mod:`gdsoftmax.loss` (the loss alone,
torch only), :mod:`gdsoftmax.baselines`, :mod:`gdsoftmax.analysis`, :mod:`gdsoftmax.engine`,
:mod:`gdsoftmax.labs` and the command line; all but the first need ``gdsoftmax[experiments]``.
"""

from gdsoftmax.loss import BACKENDS, GradientDecayLoss, gradient_decay_loss, schedules, supported_backends, theory

__all__ = ["BACKENDS", "GradientDecayLoss", "gradient_decay_loss", "schedules", "supported_backends", "theory"]
__version__ = "0.1.0"
