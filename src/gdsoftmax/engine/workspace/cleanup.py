"""A failed command leaves nothing behind that it created: the folders a block makes are removed
again when it fails and leaves them empty.

>>> import tempfile
>>> root = Path(tempfile.mkdtemp())
>>> try:
...     with folders_removed_on_failure(root / "data"):
...         (root / "data" / "MNIST" / "raw").mkdir(parents=True)
...         raise FileNotFoundError("no MNIST here")
... except FileNotFoundError:
...     pass
>>> sorted(root.iterdir())
[]
"""

from __future__ import annotations

import contextlib
import os
import shutil
from pathlib import Path

__all__ = ["folders_removed_on_failure"]


def _folders(root: Path, depth: int) -> set[Path]:
    found = {root, *root.parents}
    if root.is_dir():
        for current, subfolders, _ in os.walk(root):
            if len(Path(current).relative_to(root).parts) >= depth:
                subfolders.clear()
            found.update(Path(current) / name for name in subfolders)
    return {p for p in found if p.is_dir()}


@contextlib.contextmanager
def folders_removed_on_failure(root: Path, depth: int = 3, *, with_contents: bool = False):
    """Within the block, folders created at or above ``root``, or below it up to ``depth`` levels, are
    removed if the block raises (an interrupt too) and they are empty; nothing that existed is touched.
    ``with_contents`` removes them with what the block wrote into them (for outputs that are only ever
    written again, such as a report; never for a run, whose checkpoint an interrupted command resumes from)."""
    root = Path(root).absolute()
    before = _folders(root, depth)
    try:
        yield
    except BaseException:
        created = sorted(_folders(root, depth) - before, key=lambda p: len(p.parts), reverse=True)
        for folder in created:
            if with_contents:
                shutil.rmtree(folder, ignore_errors=True)
                continue
            with contextlib.suppress(OSError):  # not empty: something else is in it now
                folder.rmdir()
        raise
