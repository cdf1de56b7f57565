"""Crash-safe checkpoints: written atomically (:func:`gdsoftmax.analysis.files.atomic_write_bytes`, the package's
one atomic write), loadable with ``weights_only=True``; RNG states and seeding.
"""

from __future__ import annotations

import io
import random
from pathlib import Path

import numpy as np
import torch

from gdsoftmax.analysis.files import atomic_write_bytes

__all__ = ["capture_rng_state", "load_checkpoint", "restore_rng_state", "save_checkpoint",
           "seed_everything"]

def save_checkpoint(path: str | Path, state: dict) -> None:
    """``torch.save`` ``state`` atomically. Keep it to tensors, numbers, strings, lists and dicts."""
    buffer = io.BytesIO()
    torch.save(state, buffer)
    atomic_write_bytes(path, buffer.getvalue())


def load_checkpoint(path: str | Path, map_location="cpu", mmap: bool = False) -> dict:
    """Load a checkpoint with ``weights_only=True``: no pickle code is ever executed. ``mmap=True``
    maps the tensors instead of reading them, for a caller that only needs the small entries."""
    return torch.load(path, map_location=map_location, weights_only=True, mmap=mmap)


def capture_rng_state(generator: torch.Generator | None = None) -> dict:
    """Every RNG the training loop touches, as tensors (so weights_only loading accepts them)."""
    # the legacy global NumPy RNG, because user code and libraries may draw from it
    _, np_keys, np_pos, np_has_gauss, np_gauss = np.random.get_state()  # noqa: NPY002
    version, py_state, gauss = random.getstate()
    state = {
        "torch": torch.get_rng_state(),
        "numpy_keys": torch.from_numpy(np_keys.astype(np.int64)),
        "numpy_pos": torch.tensor(np_pos),
        "numpy_gauss": torch.tensor([float(np_has_gauss), np_gauss], dtype=torch.float64),
        "python": torch.tensor(py_state, dtype=torch.int64),
        "python_gauss": torch.tensor([gauss is not None, gauss or 0.0], dtype=torch.float64),
        "python_version": torch.tensor(version),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.stack(torch.cuda.get_rng_state_all())
    if generator is not None:
        state["data"] = generator.get_state()
    return state


def restore_rng_state(state: dict, generator: torch.Generator | None = None) -> None:
    torch.set_rng_state(state["torch"])
    has_gauss, gauss = state["numpy_gauss"].tolist()
    keys = state["numpy_keys"].numpy().astype(np.uint32)
    np.random.set_state(("MT19937", keys, int(state["numpy_pos"]), int(has_gauss), gauss))  # noqa: NPY002
    py_has_gauss, py_gauss = state["python_gauss"].tolist()
    random.setstate((int(state["python_version"]), tuple(state["python"].tolist()),
                     py_gauss if py_has_gauss else None))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(list(state["cuda"]))
    if generator is not None and "data" in state:
        generator.set_state(state["data"])


def seed_everything(seed: int) -> None:
    """Seed the global RNGs a run draws from (torch, the legacy NumPy RNG, Python's random)."""
    torch.manual_seed(seed)
    np.random.seed(seed % 2**32)  # noqa: NPY002 - seeds the global RNG that other code may use
    random.seed(seed)
