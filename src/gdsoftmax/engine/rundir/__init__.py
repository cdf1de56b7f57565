"""The run directory: the one place that names, writes and reads a run's files.

* ``config.toml``      the resolved config (rerun with ``gdsoftmax train run_dir/config.toml``)
* ``metrics.jsonl``    one :class:`~gdsoftmax.engine.rundir.records.EpochRow` per epoch
* ``checkpoint.pt``    a :class:`~gdsoftmax.engine.rundir.records.Checkpoint`; written atomically
* ``samples.npz``      per training sample, true-class probability and correctness at chosen epochs
* ``predictions.npz``  final validation and test logits (and 2-D features when the model has them)
* ``result.json``      a :class:`~gdsoftmax.engine.rundir.records.RunResult`; its presence marks the run finished
* ``run.json``         the run's identity: a fingerprint of its resolved config
* ``features.json``    after training, on request: the final model's feature geometry (NC1, ...), measured from
  its checkpoint by :mod:`gdsoftmax.engine.tasks.features`
* ``lock``             while a process writes the run: its pid, host and start time

Imported by their full path (this package re-exports nothing, so that an import says whether it reads or
writes):

* :mod:`~gdsoftmax.engine.rundir.records`: the file names and the records written in them, and
  :func:`~gdsoftmax.engine.rundir.records.identity`;
* :mod:`~gdsoftmax.engine.rundir.view`: :class:`~gdsoftmax.engine.rundir.view.RunView`, the
  read-only view that studies and status commands use;
* :mod:`~gdsoftmax.engine.rundir.writer`: :class:`~gdsoftmax.engine.rundir.writer.RunWriter`, the
  trainer's writer (claim, lock, open, append, finish), which can read as well;
* :mod:`~gdsoftmax.engine.rundir.checkpoint` (atomic writes, the RNG state a resume restores),
  :mod:`~gdsoftmax.engine.rundir.pidlock` (the lock) and :mod:`~gdsoftmax.engine.workspace.cleanup` (a failed
  command leaves nothing it created behind).
"""
