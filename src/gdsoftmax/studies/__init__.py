"""Studies: read finished run directories and write reports, verdicts, tables and figures.

The layer above the engine. A study reads runs only through the engine's read-only view
(:mod:`gdsoftmax.engine.rundir.view`, loaded by :func:`gdsoftmax.studies.runs.load_runs`), never
trains and never writes into a run directory; the engine never imports a study. A study measures each run
once into its typed metrics (:class:`gdsoftmax.analysis.run_metrics.RunMetrics`), analyses the rows into
sections and verdicts, and writes through the one atomic write; :mod:`gdsoftmax.studies.registry` lists every
study. Needs ``gdsoftmax[experiments]``.

>>> from gdsoftmax.studies.markdown import markdown_table
>>> print(markdown_table(["β", "ECE %"], [[1, 3.4]]))
| β | ECE % |
|---|---|
| 1 | 3.4 |
"""
