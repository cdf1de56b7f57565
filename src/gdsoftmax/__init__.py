"""gdsoftmax: the probability-dependent gradient-decay softmax loss and its experiments.

>>> import torch, gdsoftmax
>>> logits, target = torch.randn(4, 10), torch.randint(10, (4,))
>>> loss = gdsoftmax.gradient_decay_loss(logits, target, beta=0.1)

The layers, each importing only from those before it: :mod:`gdsoftmax.loss` (the loss alone,
torch only), :mod:`gdsoftmax.baselines`, :mod:`gdsoftmax.analysis`, :mod:`gdsoftmax.integrations`,
:mod:`gdsoftmax.engine`, :mod:`gdsoftmax.studies`, :mod:`gdsoftmax.labs` and the command line; all but the first
need ``gdsoftmax[experiments]``.
"""

__all__ = ["BACKENDS", "GradientDecayLoss", "gradient_decay_loss", "schedules", "supported_backends", "theory"]
__version__ = "0.1.0"


def __getattr__(name: str):
    """The loss's names, imported on first use: ``gdsoftmax --help`` and ``--version`` then start
    without importing torch (a second or more)."""
    if name in __all__:
        import gdsoftmax.loss

        return getattr(gdsoftmax.loss, name)
    raise AttributeError(f"module 'gdsoftmax' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted([*globals(), *__all__])
