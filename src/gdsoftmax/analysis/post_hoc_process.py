"""Post-hoc calibration of many runs fitted in a forked process while the caller goes on.

Temperature and vector scaling (:func:`~gdsoftmax.analysis.calibration.compare_post_hoc`) are L-BFGS fits on
each run's validation logits: the largest serial part of a sweep's report, and they need nothing else the report
computes. On a machine with more than one core a fork of this process fits them while the report measures and
draws, where a fork is safe (:func:`~gdsoftmax.analysis.background.fork_is_safe`); elsewhere they are fitted
here when the results are asked for. Never through multiprocessing's spawn, which would run the caller's own
script again in the child (any script calling ``gdsoftmax.api.report`` without a ``__main__`` guard). Results
come back as JSON floats, which round-trip exactly, and both ways call :func:`post_hoc_values`.

>>> import numpy as np
>>> rng = np.random.default_rng(0)
>>> logits, labels = rng.normal(size=(90, 3)), rng.integers(3, size=90)
>>> with PostHocFits([(logits, labels, logits, labels)], n_bins=10, background=False) as fits:
...     sorted(fits.results()[0])
['T', 'temperature ece', 'temperature mce', 'temperature nll', 'vector ece', 'vector mce', 'vector nll']
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch

from gdsoftmax.analysis.background import ForkedWork, forks_help
from gdsoftmax.analysis.calibration import compare_post_hoc

__all__ = ["PostHocFits", "post_hoc_values"]


def post_hoc_values(val_logits: np.ndarray, val_labels: np.ndarray, test_logits: np.ndarray,
                    test_labels: np.ndarray, n_bins: int) -> dict[str, float]:
    """Test ECE, MCE and NLL after temperature and after vector scaling fitted on validation, and the fitted T."""
    post = compare_post_hoc(val_logits, val_labels, torch.from_numpy(np.asarray(test_logits)).double(),
                            torch.from_numpy(np.asarray(test_labels)), n_bins)
    values = {}
    for key, result in post.items():
        values[f"{key} ece"], values[f"{key} mce"] = float(result.after.ece), float(result.after.mce)
        values[f"{key} nll"] = float(result.after.nll)
    values["T"] = float(post["temperature"].params["T"])
    return values


def _write_results(folder: Path, items: list[tuple[np.ndarray, ...]], n_bins: int) -> None:
    (folder / "results.json").write_text(json.dumps([post_hoc_values(*item, n_bins) for item in items]))


class PostHocFits:
    """:func:`post_hoc_values` of each ``(val_logits, val_labels, test_logits, test_labels)``: fitted in a fork of
    this process from now on (``background``; by default when :func:`~gdsoftmax.analysis.background.forks_help`),
    or here when :meth:`results` is asked for. Use it as a context manager: leaving it stops a child still running
    and removes its temporary folder."""

    def __init__(self, items: list[tuple[np.ndarray, ...]], n_bins: int, background: bool | None = None):
        if background not in (None, True, False):
            raise ValueError(f"background must be None, True or False, got {background!r}")
        if background is None:  # one core: a second process would only take turns with this one
            background = forks_help()
        self._items, self._n_bins = items, n_bins
        self._forked = ForkedWork(lambda folder: _write_results(folder, items, n_bins)) \
            if background and items else None

    def results(self) -> list[dict[str, float]]:
        """One dict per item, in order (waits for the forked process)."""
        if self._forked is None:
            return [post_hoc_values(*item, self._n_bins) for item in self._items]
        return json.loads((self._forked.wait() / "results.json").read_text())

    def close(self) -> None:
        if self._forked is not None:
            self._forked.close()

    def __enter__(self) -> PostHocFits:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
