"""Files written whole or not at all: the one atomic write every writer of the package goes through (run
directories, checkpoints, reports, figures, predictions).

A file is written to a temporary name in its own directory, flushed and fsynced, then renamed over the target
with ``os.replace`` (atomic on POSIX), and the directory is fsynced so that the rename itself survives a power
cut. A reader therefore sees the old file or the new one, never half of one, whenever the writer is killed, and a
failed write leaves no temporary file behind. The file gets the mode a plain ``open`` would give it (``mkstemp``'s
is 0600, which would hide results from other users).

>>> import tempfile
>>> target = Path(tempfile.mkdtemp()) / "report.md"
>>> write_text_atomically(target, "# Report\\n").read_text()
'# Report\\n'
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

__all__ = ["atomic_write_bytes", "write_text_atomically"]


def atomic_write_bytes(path: str | Path, data: bytes) -> Path:
    """Write ``data`` to ``path`` so that a crash leaves either the old or the new file; the path."""
    path = Path(path)
    fd, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.fchmod(fd, 0o666 & ~_umask())
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
    _fsync_directory(path.parent)
    return path


def write_text_atomically(path: str | Path, text: str) -> Path:
    """:func:`atomic_write_bytes` of ``text`` in UTF-8; the path."""
    return atomic_write_bytes(path, text.encode("utf-8"))


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _fsync_directory(directory: Path) -> None:
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:  # not every platform can open a directory
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
