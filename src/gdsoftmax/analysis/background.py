"""Work done in a fork of this process while this one goes on: how a report uses a second core.

A fork shares what this process has imported and loaded (torch, the runs' arrays) instead of starting again, so
it suits work that needs only what is already in memory and leaves files behind. It is used only where it is
safe (:func:`fork_is_safe`); elsewhere the work runs here, at once, and gives the same files.

>>> from pathlib import Path
>>> with ForkedWork(lambda folder: (folder / "done.txt").write_text("yes"), fork=False) as work:
...     (work.wait() / "done.txt").read_text()
'yes'
"""

from __future__ import annotations

import multiprocessing
import os
import signal
import sys
import tempfile
import threading
from collections.abc import Callable
from pathlib import Path

__all__ = ["ForkedWork", "fork_is_safe", "forks_help"]


def fork_is_safe() -> bool:
    """Whether this process may fork a worker: on Linux (macOS's system libraries are not fork-safe), with
    torch's compiler not imported (a forked child of a process that had imported it hung) and no other Python
    thread running (a lock one of them holds would stay held in the child)."""
    return (sys.platform.startswith("linux") and "fork" in multiprocessing.get_all_start_methods()
            and "torch._dynamo" not in sys.modules and threading.active_count() == 1)


def forks_help() -> bool:
    """Whether to hand work to forked children: more than one core, and a fork is safe."""
    return (os.cpu_count() or 1) > 1 and fork_is_safe()


def _run(work: Callable[[Path], None], folder: Path) -> None:
    # A Ctrl-C reaches the whole process group: the parent stops its children itself (ForkedWork.close), so a
    # child ignores it rather than print a second traceback.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    # One torch thread: this process keeps working on the other cores, and idle torch threads would spin there.
    if "torch" in sys.modules:
        sys.modules["torch"].set_num_threads(1)
    try:
        work(folder)
    except Exception as error:
        (folder / "error.txt").write_text(f"{type(error).__name__}: {error}\n")
        sys.exit(1)


class ForkedWork:
    """``work(folder)`` in a forked child (``fork=True``, where :func:`fork_is_safe`), or here and now; ``folder``
    is a private temporary folder for what it writes, read through :meth:`wait` and removed on leaving the
    ``with`` block, which also stops a child still running."""

    def __init__(self, work: Callable[[Path], None], fork: bool = True):
        self._folder = tempfile.TemporaryDirectory(prefix="gdsoftmax-work-")
        self.folder = Path(self._folder.name)
        self._process: multiprocessing.Process | None = None
        if fork and fork_is_safe():
            self._process = multiprocessing.get_context("fork").Process(target=_run, args=(work, self.folder),
                                                                        daemon=True)
            self._process.start()
        else:
            try:
                work(self.folder)
            except BaseException:
                self._folder.cleanup()
                raise

    def wait(self) -> Path:
        """The folder, once the work is done; a RuntimeError with the child's message if it failed."""
        if self._process is not None:
            self._process.join()
            if self._process.exitcode != 0:
                said = self.folder / "error.txt"
                message = said.read_text().strip() if said.exists() else "it said nothing"
                raise RuntimeError(f"work in a forked process failed (exit code {self._process.exitcode}): "
                                   f"{message}")
        return self.folder

    def close(self) -> None:
        if self._process is not None and self._process.is_alive():
            self._process.kill()
            self._process.join()
        self._folder.cleanup()

    def __enter__(self) -> ForkedWork:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
