"""Many runs: a grid of settings and its labels (:mod:`.grid`), a sweep that trains its cells (:mod:`.sweep`),
the launchers that spread cells over processes or a cluster (:mod:`.launcher`), and the hyperparameter search
(:mod:`.tune_spec`, :mod:`.tuning`)."""
