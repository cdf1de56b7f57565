"""The geometry of a finished run's penultimate features, recomputed once from its checkpoint (``features.json`` in
the run directory): neural-collapse NC1, the within-class variability of the training features relative to the
between-class one (Papyan, Han & Donoho 2020; :func:`gdsoftmax.analysis.collapse.collapse_metrics`), with NC2 and
NC3. A run keeps only low-dimensional features in ``predictions.npz``; this reads the model back
(``weights_only=True``), runs the training split through it in eval mode, and records the numbers, so that a study
(which reads runs, never models) can test a claim about compact features.

>>> from gdsoftmax.engine.tasks.features import FEATURE_KEYS
>>> FEATURE_KEYS
('nc1', 'nc2_features', 'nc2_classifier', 'nc3')
"""

from __future__ import annotations

import json
from pathlib import Path

from tqdm.auto import tqdm

from gdsoftmax.analysis.collapse import collapse_metrics
from gdsoftmax.analysis.files import atomic_write_bytes
from gdsoftmax.engine.config.schema import to_dict
from gdsoftmax.engine.data.images import Dataset
from gdsoftmax.engine.models.classifier import Classifier
from gdsoftmax.engine.models.registry import build_model
from gdsoftmax.engine.rundir.records import FEATURES_FILE
from gdsoftmax.engine.rundir.view import RunView, finished_runs
from gdsoftmax.engine.tasks.images import ImageClassification, forward_all

__all__ = ["FEATURE_KEYS", "record_features", "record_sweep_features"]

_IMAGES = ImageClassification()  # the feature geometry is of image classifiers

FEATURE_KEYS = ("nc1", "nc2_features", "nc2_classifier", "nc3")


def record_features(run_dir: str | Path, data: Dataset | None = None) -> dict[str, float] | None:
    """Write (once) and return the feature geometry of the finished run at ``run_dir``; None for a run whose model
    has no :class:`~gdsoftmax.engine.models.classifier.Classifier` head (a language model, the user's own module, a
    margin loss's head). ``data``: the run's data set, when the caller holds it already."""
    view = RunView(run_dir)
    if not view.is_finished:
        raise ValueError(f"{run_dir} has not finished training; its features are those of its last model")
    epoch = view.checkpoint_epoch()
    done = view.features()
    if done is not None and done.get("epoch") == epoch:  # measured on this model (not one a longer run replaced)
        return {k: done[k] for k in FEATURE_KEYS}
    config = view.config()
    if config.loss.name != "gdsoftmax" or ":" in config.model.name:
        return None
    data = _IMAGES.prepare(_IMAGES.load(config), config) if data is None else data
    model = build_model(config.model.name, data.image_shape, data.num_classes, config.model.penultimate_dim or None,
                        **config.model.options)
    if not isinstance(model, Classifier):
        return None
    model.load_state_dict(view.checkpoint().model)
    _, features = forward_all(model, data, "train", config, features=True)
    values = collapse_metrics(features, data.train.labels, model.classifier.weight.detach())
    record = {"epoch": epoch, "split": "train", **values}
    atomic_write_bytes(Path(run_dir) / FEATURES_FILE, (json.dumps(record, indent=1) + "\n").encode())
    return values


def record_sweep_features(sweep_dir: str | Path, *, progress: bool = True) -> int:
    """:func:`record_features` for every finished run under ``sweep_dir`` (each data set loaded once); the number
    of runs measured or already measured. ``progress``: a bar on stderr where it is a terminal."""
    cache: dict[str, Dataset] = {}
    measured = 0
    single = RunView(sweep_dir)  # gdsoftmax train writes one run, a sweep a folder of them
    views = [single] if single.is_finished else finished_runs(sweep_dir)
    for view in tqdm(views, desc="feature geometry", unit="run", disable=None if progress else True, leave=False):
        config = view.config()
        key = json.dumps(to_dict(config)["data"], sort_keys=True, default=str)
        if key not in cache and config.loss.name == "gdsoftmax" and ":" not in config.model.name:
            cache[key] = _IMAGES.prepare(_IMAGES.load(config), config)
        measured += record_features(view.path, cache.get(key)) is not None
    return measured
