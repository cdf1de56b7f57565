"""What is trained, as a :class:`~gdsoftmax.engine.tasks.base.Task`: image classification (:mod:`.images`) and
next-token prediction (:mod:`.tokens`). The task registry (:func:`task_for`) is the one place that tells a
config's kind of training; the loop calls the task for everything that differs between kinds."""
