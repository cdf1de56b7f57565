"""Markdown tables for the reports, and the atomic write of a report's text files.

>>> print(markdown_table(["a", "b"], [[1, 2]]))
| a | b |
|---|---|
| 1 | 2 |
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

__all__ = ["markdown_table", "write_text_atomically"]


def markdown_table(header: list[str], rows: list[list[str]]) -> str:
    """A GitHub-flavoured table; a cell must not hold "|", which would split it."""
    if any("|" in str(c) for row in rows for c in row):
        raise ValueError("a table cell holds '|', which would split it: reword the cell")
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def write_text_atomically(path: str | Path, text: str) -> Path:
    """Write ``text`` to ``path`` through a temporary file renamed over it: a reader (or a crash) never sees
    half a report, and a failed write leaves no temporary file. Every writer of the studies, labs and commands
    goes through this one. The file gets the mode a plain ``open`` would give it (``mkstemp``'s is 0600).

    >>> import tempfile
    >>> target = Path(tempfile.mkdtemp()) / "report.md"
    >>> write_text_atomically(target, "# Report\\n").read_text()
    '# Report\\n'
    """
    path = Path(path)
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(handle, "w", encoding="utf-8") as file:
            file.write(text)
        mask = os.umask(0)
        os.umask(mask)
        os.chmod(temporary, 0o666 & ~mask)
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
    return path
