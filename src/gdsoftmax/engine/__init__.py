"""The experiment engine: it trains and writes runs. Its folders follow a run's life, lowest first:
``workspace`` (the user's code and folders), ``data``, ``models`` and ``recipe`` (objective, optimizer,
learning rate, precision), ``config`` (the file, its checks against those catalogs, β), ``rundir`` (the run's
files), ``tasks`` (what differs between images and token streams), ``tracking`` (TensorBoard, MLflow, W&B),
``loop`` (the one training loop) and ``sweeps`` (grids, launchers, the search).
Needs ``gdsoftmax[experiments]``; imports from :mod:`gdsoftmax.loss`, :mod:`gdsoftmax.baselines`
and :mod:`gdsoftmax.analysis`, never from the studies, the labs or the command line. Reports
that read finished runs live in :mod:`gdsoftmax.studies`.

>>> from gdsoftmax.engine.config.schema import parse_config
>>> parse_config({"loss": {"beta": 0.1}}).loss.beta.describe()
'β = 0.1'
"""
