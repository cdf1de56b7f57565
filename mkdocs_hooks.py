"""MkDocs hooks for the documentation site (named in mkdocs.yml).

The docstrings carry doctests (``>>>`` lines with their output) that pytest runs. Markdown would
read those lines as nested block quotes, so a preprocessor fences each run of them as a ``pycon``
code block, in the pages and in the API reference alike.
"""

from __future__ import annotations

import re

from markdown import Extension
from markdown.preprocessors import Preprocessor

PROMPT = re.compile(r"^(\s*)>>> ")


class DoctestBlocks(Preprocessor):
    """Wrap each doctest (prompt lines, continuation lines and output, up to a blank line) in a fence."""

    def run(self, lines: list[str]) -> list[str]:
        out, inside, fenced = [], None, False
        for line in lines:
            if line.lstrip().startswith("```"):
                fenced = not fenced
            if inside is None and not fenced and (match := PROMPT.match(line)):
                inside = match.group(1)
                out += ["", f"{inside}```pycon"]
            elif inside is not None and not line.strip():
                out += [f"{inside}```", ""]
                inside = None
            out.append(line)
        return out + ([f"{inside}```"] if inside is not None else [])


class DoctestExtension(Extension):
    def extendMarkdown(self, md):  # the name is Markdown's API
        md.preprocessors.register(DoctestBlocks(md), "doctest_blocks", 40)


def on_config(config):
    config.markdown_extensions.append(DoctestExtension())
    return config
