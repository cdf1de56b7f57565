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
    half a report."""
    path = Path(path)
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    with os.fdopen(handle, "w", encoding="utf-8") as file:
        file.write(text)
    os.replace(temporary, path)
    return path
