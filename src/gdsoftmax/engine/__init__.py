"""The experiment engine: configs, data, models, objectives, the training loop and its stacked
strategy, sweeps, run directories, checkpoints, adaptive β and reports. Needs
``gdsoftmax[experiments]``; imports from :mod:`gdsoftmax.loss`, :mod:`gdsoftmax.baselines` and
:mod:`gdsoftmax.analysis`, never from the labs or the command line.

>>> from gdsoftmax.engine.config import parse_config
>>> parse_config({"loss": {"beta": 0.1}}).loss.beta.describe()
'β = 0.1'
"""
