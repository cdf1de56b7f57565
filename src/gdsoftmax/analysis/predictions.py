"""Saved predictions of one model and seed, as ``gdsoftmax compare`` reads them: ``SETTING/SEED.npz``.

A file holds ``val_logits`` (N, K), ``val_labels`` (N,), ``test_logits`` (M, K) and ``test_labels`` (M,),
the names of the engine's own ``predictions.npz``. Any training loop writes one with
:func:`save_predictions` at the end of training (the validation split fits temperature scaling; the
test split is scored), and :func:`load_predictions` reads a folder of them, checking each file.

>>> import tempfile
>>> folder = Path(tempfile.mkdtemp())
>>> logits, labels = np.eye(3)[[0, 1, 2, 0]], np.array([0, 1, 2, 1])
>>> path = save_predictions(folder / "beta=1" / "0.npz", logits, labels, logits, labels)
>>> sorted(load_predictions(folder)["beta=1"]["0"])
['test_labels', 'test_logits', 'val_labels', 'val_logits']
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np

from gdsoftmax.analysis.files import atomic_write_bytes

__all__ = ["ARRAYS", "load_predictions", "save_predictions"]

ARRAYS = ("val_logits", "val_labels", "test_logits", "test_labels")


def _array(value) -> np.ndarray:
    if hasattr(value, "detach"):  # a torch tensor, on any device
        value = value.detach().float().cpu().numpy() if value.is_floating_point() else value.detach().cpu().numpy()
    return np.asarray(value)


def save_predictions(path: str | Path, val_logits, val_labels, test_logits, test_labels) -> Path:
    """Write one seed's predictions (numpy arrays or torch tensors) to ``path`` atomically; returns it."""
    for name, labels in (("val_labels", val_labels), ("test_labels", test_labels)):
        if not np.issubdtype(_array(labels).dtype, np.integer):  # the cast below would truncate 0.5 to 0 silently
            raise ValueError(f"{name} must hold integer class indices, got dtype {_array(labels).dtype}")
    arrays = {"val_logits": _array(val_logits).astype(np.float32), "val_labels": _array(val_labels).astype(np.int64),
              "test_logits": _array(test_logits).astype(np.float32),
              "test_labels": _array(test_labels).astype(np.int64)}
    _check(arrays, Path(path))
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    buffer = io.BytesIO()
    np.savez_compressed(buffer, **arrays)
    return atomic_write_bytes(path, buffer.getvalue())


def _check(arrays: dict[str, np.ndarray], path: Path) -> None:
    for split in ("val", "test"):
        logits, labels = arrays[f"{split}_logits"], arrays[f"{split}_labels"]
        if logits.ndim != 2 or labels.shape != logits.shape[:1]:
            raise ValueError(f"{path}: {split}_logits must be (N, K) and {split}_labels (N,), got "
                             f"{logits.shape} and {labels.shape}")
        if len(labels) == 0:
            raise ValueError(f"{path}: the {split} split is empty")
        if not np.issubdtype(labels.dtype, np.integer) or labels.min() < 0 or labels.max() >= logits.shape[1]:
            raise ValueError(f"{path}: {split}_labels must be class indices in [0, {logits.shape[1]})")
        if not np.isfinite(logits).all():
            raise ValueError(f"{path}: {split}_logits holds NaN or infinite values")
    if arrays["val_logits"].shape[1] != arrays["test_logits"].shape[1]:
        raise ValueError(f"{path}: validation and test logits have different class counts")


def _read(path: Path) -> dict[str, np.ndarray]:
    try:
        with np.load(path, allow_pickle=False) as archive:
            missing = [name for name in ARRAYS if name not in archive.files]
            if missing:
                raise ValueError(f"{path} lacks {missing} (it holds {archive.files}); save it with "
                                 "gdsoftmax.analysis.predictions.save_predictions")
            arrays = {name: archive[name] for name in ARRAYS}
    except (OSError, EOFError) as error:
        raise ValueError(f"{path} is not an npz file of predictions ({error})") from error
    _check(arrays, path)
    return arrays


def load_predictions(root: str | Path) -> dict[str, dict[str, dict[str, np.ndarray]]]:
    """``{setting: {seed: arrays}}`` from ``root/SETTING/SEED.npz``, every file checked; ValueError naming the
    file (or the layout expected) otherwise."""
    root = Path(root)
    if not root.is_dir():
        raise ValueError(f"{root} is not a folder; give the folder that holds SETTING/SEED.npz files")
    found = {folder.name: {file.stem: _read(file) for file in sorted(folder.glob("*.npz"))}
             for folder in sorted(root.iterdir()) if folder.is_dir() and not folder.name.startswith(".")}
    found = {setting: seeds for setting, seeds in found.items() if seeds}
    if not found:
        raise ValueError(f"{root} holds no SETTING/SEED.npz files (e.g. beta=1/0.npz, beta=2/0.npz)")
    classes = {arrays["test_logits"].shape[1] for seeds in found.values() for arrays in seeds.values()}
    if len(classes) > 1:
        raise ValueError(f"the predictions under {root} have different class counts ({sorted(classes)})")
    return found
