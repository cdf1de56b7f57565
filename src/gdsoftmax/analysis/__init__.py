"""What is measured on a model's outputs: calibration metrics and post-hoc calibration,
seeded statistics, margins, neural-collapse metrics and the paper's figures, the typed row of a
run's metrics (run_metrics) and the one atomic file write every writer uses (files). Functions of
tensors and arrays; nothing here trains or reads a run directory.

>>> import torch
>>> from gdsoftmax.analysis.metrics import calibration_metrics
>>> report = calibration_metrics(torch.tensor([[2.0, 0.0], [0.0, 1.0]]), torch.tensor([0, 0]), n_bins=10)
>>> report.accuracy
0.5
"""
