"""A lock file naming its holder (process id, host, time), taken over when its process is gone.

>>> import tempfile, pathlib
>>> path = pathlib.Path(tempfile.mkdtemp()) / "lock"
>>> with hold_lock(path, lambda holder, p: RuntimeError("held")):
...     read_lock(path)["pid"] == os.getpid()
True
>>> path.exists()
False
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import time
from collections.abc import Callable
from pathlib import Path

__all__ = ["hold_lock", "is_stale", "read_lock"]


@contextlib.contextmanager
def hold_lock(path: Path, refused: Callable[[dict, Path], Exception]):
    """Create ``path`` exclusively with this process's name in it for the block, then remove it. A
    live holder makes it raise ``refused(holder, path)``; a stale one (its process gone) is replaced."""
    me = {"pid": os.getpid(), "host": socket.gethostname(), "since": time.time()}
    for _ in range(2):
        try:
            fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            holder = read_lock(path)
            if holder is not None and not is_stale(holder):
                raise refused(holder, path) from None
            path.unlink(missing_ok=True)  # stale: its process is gone
            continue
        with os.fdopen(fd, "w") as handle:
            json.dump(me, handle)
        break
    try:
        yield
    finally:
        if read_lock(path) == me:
            path.unlink(missing_ok=True)


def read_lock(path: Path) -> dict | None:
    """The holder written in a lock file, or None (no file, or unreadable)."""
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def is_stale(holder: dict) -> bool:
    """A lock whose process is gone (checked on this host only; another host's lock is trusted)."""
    if holder.get("host") != socket.gethostname():
        return False
    try:
        os.kill(int(holder["pid"]), 0)
    except ProcessLookupError:
        return True
    except (PermissionError, ValueError, KeyError, TypeError):
        return False
    return False
