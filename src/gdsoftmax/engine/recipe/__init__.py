"""How a run learns: the objective (the β-loss and the baselines, :mod:`.objectives`), the optimizer
(:mod:`.optim`), the learning-rate schedule (:mod:`.lr`) and the precision, determinism and compilation
(:mod:`.acceleration`)."""
