"""The reference of every config key, generated from the config dataclasses so that it cannot drift.

Each key's type and default come from :class:`~gdsoftmax.engine.config.schema.ExperimentConfig` and its
tables; its meaning is the comment written beside (or just above) the field in
:mod:`gdsoftmax.engine.config.schema`; the accepted values of a key that takes one of a list come from the
same lists that validation uses. ``docs/config-reference.md`` is this module's output, and a test
keeps it current:

    python -m gdsoftmax.engine.config.reference docs/config-reference.md

>>> keys = {key.name: key for key in config_keys()}
>>> keys["loss.beta"].default, keys["train.epochs"].type
('1.0', 'int')
"""

from __future__ import annotations

import ast
import dataclasses
import io
import sys
import tokenize
import typing
from dataclasses import dataclass
from pathlib import Path

from gdsoftmax.analysis.files import write_text_atomically
from gdsoftmax.engine.config import schema as config_module
from gdsoftmax.engine.config.schema import INPUT_SCALINGS, LOGGERS, PRECISIONS, ExperimentConfig, to_dict
from gdsoftmax.engine.data.images import DATASETS
from gdsoftmax.engine.models.registry import MODELS
from gdsoftmax.engine.recipe.objectives import OBJECTIVES
from gdsoftmax.loss import BACKENDS
from gdsoftmax.loss.literal import NUMERICS

__all__ = ["ConfigKey", "config_keys", "reference_markdown"]

CHOICES = {"data.dataset": sorted(DATASETS), "data.input_scaling": list(INPUT_SCALINGS), "model.name": sorted(MODELS),
           "loss.name": list(OBJECTIVES), "loss.backend": list(BACKENDS), "loss.numerics": list(NUMERICS),
           "train.precision": list(PRECISIONS), "train.log": list(LOGGERS)}


@dataclass(frozen=True)
class ConfigKey:
    """One config key: dotted name, type as written in the dataclass, default as TOML would show it, meaning."""

    name: str
    type: str
    default: str
    meaning: str


def _comments_by_line(source: str) -> dict[int, str]:
    comments = {}
    for token in tokenize.generate_tokens(io.StringIO(source).readline):
        if token.type == tokenize.COMMENT:
            comments[token.start[0]] = token.string.lstrip("#").strip()
    return comments


def _field_meanings(source: str) -> dict[tuple[str, str], str]:
    """(class name, field name) -> the comment beside the field, or the comment lines just above it."""
    comments, lines, meanings = _comments_by_line(source), source.splitlines(), {}
    for node in ast.parse(source).body:
        if not isinstance(node, ast.ClassDef):
            continue
        for item in node.body:
            if not (isinstance(item, ast.AnnAssign) and isinstance(item.target, ast.Name)):
                continue
            above, line = [], item.lineno - 1
            while line >= 1 and lines[line - 1].strip().startswith("#"):
                above.insert(0, comments[line])
                line -= 1
            beside = comments.get(item.end_lineno)
            meanings[node.name, item.target.id] = " ".join([*above, *([beside] if beside else [])])
    return meanings


def _shown(value) -> str:
    if isinstance(value, str):
        return f'"{value}"'
    if isinstance(value, bool):
        return str(value).lower()
    return repr(value) if not isinstance(value, dict) else ("{}" if not value else str(value))


def config_keys(cls=ExperimentConfig, prefix: str = "", meanings: dict | None = None) -> list[ConfigKey]:
    """Every leaf key of the config, in the order the dataclasses declare them."""
    if meanings is None:
        meanings = _field_meanings(Path(config_module.__file__).read_text())
    hints, defaults, keys = typing.get_type_hints(cls), cls(), []
    for f in dataclasses.fields(cls):
        if dataclasses.is_dataclass(hints[f.name]):
            keys += config_keys(hints[f.name], f"{prefix}{f.name}.", meanings)
            continue
        name = prefix + f.name
        meaning = meanings.get((cls.__name__, f.name), "")
        if name in CHOICES:
            meaning = f"{meaning.rstrip('.')}; one of: {', '.join(f'`{c}`' for c in CHOICES[name])}"
        keys.append(ConfigKey(name, str(f.type), _shown(to_dict(getattr(defaults, f.name))), meaning.strip()))
    return keys


def reference_markdown() -> str:
    """The reference page, one table per config table."""
    lines = ["# Config reference", "",
             "Every key a config file (TOML) or `--set key=value` accepts, with its type and default. Generated "
             "from the config dataclasses by `python -m gdsoftmax.engine.config.reference docs/config-reference.md`; "
             "a test fails when this page and the code differ.", ""]
    table = None
    for key in sorted(config_keys(), key=lambda k: "." in k.name):  # the top-level keys first; stable
        section = key.name.split(".")[0] if "." in key.name else "top level"
        if section != table:
            table = section
            lines += ["", f"## {'[' + section + ']' if section != 'top level' else 'Top level'}", "",
                      "| key | type | default | meaning |", "|---|---|---|---|"]
        meaning = key.meaning.replace("|", "\\|")
        lines.append(f"| `{key.name}` | `{key.type.replace('|', '&#124;')}` | `{key.default}` | {meaning} |")
    return "\n".join(lines).replace("\n\n\n", "\n\n") + "\n"


if __name__ == "__main__":
    text = reference_markdown()
    if len(sys.argv) > 1:
        write_text_atomically(sys.argv[1], text)
    else:
        sys.stdout.write(text)
