"""Markdown tables for the reports (which write through :func:`gdsoftmax.analysis.files.write_text_atomically`).

>>> print(markdown_table(["a", "b"], [[1, 2]]))
| a | b |
|---|---|
| 1 | 2 |
"""

from __future__ import annotations

__all__ = ["markdown_table"]


def markdown_table(header: list[str], rows: list[list[str]]) -> str:
    """A GitHub-flavoured table; a cell must not hold "|", which would split it."""
    if any("|" in str(c) for row in rows for c in row):
        raise ValueError("a table cell holds '|', which would split it: reword the cell")
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)
