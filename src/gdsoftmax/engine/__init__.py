"""The experiment engine: it trains and writes runs. Configs, data, models, objectives, the training
loop and its stacked strategy, sweeps and launchers, run directories, checkpoints and adaptive β.
Needs ``gdsoftmax[experiments]``; imports from :mod:`gdsoftmax.loss`, :mod:`gdsoftmax.baselines`
and :mod:`gdsoftmax.analysis`, never from the studies, the labs or the command line. Reports
that read finished runs live in :mod:`gdsoftmax.studies`.

>>> from gdsoftmax.engine.config import parse_config
>>> parse_config({"loss": {"beta": 0.1}}).loss.beta.describe()
'β = 0.1'
"""
