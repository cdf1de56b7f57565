"""Where a run is mirrored besides its own folder: the :class:`~.registry.Tracker` protocol and its registry
(:mod:`.registry`), the trackers (:mod:`.tensorboard`, :mod:`.mlflow`, :mod:`.wandb`) and the one place a run's
labels come from (:mod:`.labels`)."""
