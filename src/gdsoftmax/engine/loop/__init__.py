"""A run's training: :mod:`.trainer` (one loop, read top to bottom, for one run or several stacked), the
strategy that trains one model of any task (:mod:`.one_model`), the stacked strategy (:mod:`.stacked`) and the
processes of a data-parallel launch (:mod:`.distributed`)."""
