"""A config's ``[sweep]`` grid: one cell per combination, named by an injective function of its values.

A cell's name joins ``key=label`` parts, e.g. ``beta=0.1_seed=2``: the key's last word (the whole
dotted key where two swept keys end in the same word) and a short, file-name-safe label (floats as
%g, a schedule as its kind and start-end). Where two different values of one key would get the
same label (floats that print alike, schedules that differ in another field), the label of a float
that does not read back as itself, or of a later value, gains ``~`` and six hex digits of a hash of
the exact value: two cells never share a run directory, and appending a value to a grid never
renames a cell that exists.
A grid that lists a value twice, whose variants share a label, whose cells are the same run, or
that has more than ``max_cells`` cells (unless asked for) is refused with a ConfigError.

>>> from gdsoftmax.engine.config.schema import parse_config
>>> grid = parse_config({"sweep": {"loss.beta": [0.1, 0.1000001, 5.0], "seed": [0, 1]}})
>>> cells = sweep_cells(grid)
>>> cells[0].name, cells[2].name, cells[-1].name, cells[-1].setting
('beta=0.1_seed=0', 'beta=0.1~..._seed=0', 'beta=5_seed=1', 'beta=5')
>>> cells[0].name != cells[2].name
True
"""

from __future__ import annotations

import hashlib
import itertools
import json
import math
import re
from dataclasses import dataclass

from gdsoftmax.engine.config.schema import ConfigError, ExperimentConfig, apply_assignments, parse_config, to_dict

__all__ = ["MAX_CELLS", "Cell", "expand_sweep", "grid_size", "sweep_cells"]

MAX_CELLS = 1000  # a larger grid must be asked for (``gdsoftmax sweep --max-cells N``)


@dataclass
class Cell:
    """One run of a grid: its directory name, its config, and its setting (the name without its
    seed part: cells that differ only in seed share it, and a summary averages over them)."""

    name: str
    config: ExperimentConfig
    setting: str


def grid_size(config: ExperimentConfig) -> int:
    """How many cells the grid has, computed without building them."""
    sizes = [len(v) for k, v in config.sweep.items() if k != "variants"]
    return math.prod(sizes) * len(config.sweep.get("variants", [{}]))


def expand_sweep(config: ExperimentConfig, max_cells: int = MAX_CELLS) -> list[tuple[str, ExperimentConfig]]:
    """The grid as (cell name, cell config) pairs, in a fixed order."""
    return [(cell.name, cell.config) for cell in sweep_cells(config, max_cells)]


def sweep_cells(config: ExperimentConfig, max_cells: int = MAX_CELLS) -> list[Cell]:
    """Every cell of the grid (the config itself when it has no ``[sweep]``)."""
    if not config.sweep:
        return [Cell(config.name, config, config.name)]
    size = grid_size(config)
    if size > max_cells:
        raise ConfigError(f"the sweep grid has {size} cells, more than {max_cells}; if that is what you want, "
                          f"pass --max-cells {size}")
    keys = [k for k in config.sweep if k != "variants"]
    for key in keys:
        _refuse_repeats(f"sweep.{key}", config.sweep[key])
    words = _words(keys)
    labels = {key: _injective_labels(config.sweep[key]) for key in keys}
    variants = config.sweep.get("variants", [{}])
    cells = []
    for variant, prefix in zip(variants, _variant_labels(variants, words), strict=True):
        for indices in itertools.product(*(range(len(config.sweep[k])) for k in keys)):
            parts = {k: f"{words[k]}={labels[k][i]}" for k, i in zip(keys, indices, strict=True)}
            head = [prefix] if prefix else []
            name = "_".join(head + list(parts.values()))
            setting = "_".join(head + [p for k, p in parts.items() if k != "seed"]) or config.name
            assignments = {**variant, **{k: config.sweep[k][i] for k, i in zip(keys, indices, strict=True)}}
            cells.append(Cell(name, parse_config(apply_assignments(config, assignments)), setting))
    _refuse_duplicate_cells(cells)
    for cell in cells:  # a cell's run is named after its directory: the sweep, --status and the launcher agree
        cell.config.name = cell.name
    return cells


def _canonical(value) -> str:
    return json.dumps(value, sort_keys=True, default=str)


def _refuse_repeats(where: str, values: list) -> None:
    seen = set()
    for value in values:
        if _canonical(value) in seen:
            raise ConfigError(f"{where} lists {_canonical(value)} twice; each value makes one cell")
        seen.add(_canonical(value))


def _words(keys: list[str]) -> dict[str, str]:
    """The word each key contributes to names: its last part, or the whole key where that is ambiguous."""
    last = [k.split(".")[-1] for k in keys]
    return {k: (w if last.count(w) == 1 else k) for k, w in zip(keys, last, strict=True)}


def label(value) -> str:
    """A short, file-name-safe label for a swept value (not always unique: see _injective_labels)."""
    if isinstance(value, dict):
        kind = value.get("kind", "table")
        parts = [label(value[k]) for k in ("start", "value", "end") if k in value]
        return kind + "-".join(parts) if parts else kind
    text = f"{value:g}" if isinstance(value, float) else str(value)
    return re.sub(r"[^A-Za-z0-9.+-]", "-", text)


def _injective_labels(values: list) -> list[str]:
    """Labels for the values of one key, each decided without the values listed after it, so that a grid
    extended by appending values keeps its finished cells' names. A float keeps its plain label when the
    label reads back as exactly that float, and gains a hash otherwise; any other value keeps it unless a
    value listed before it already has it.

    >>> _injective_labels([0.1000001, 0.1]), _injective_labels([0.1])
    (['0.1~...', '0.1'], ['0.1'])
    """
    labels, taken = [], set()
    for value in values:
        short = label(value)
        exact = float(short) == value if isinstance(value, float) and _is_number(short) else short not in taken
        labels.append(short if exact else f"{short}~{hashlib.sha256(_canonical(value).encode()).hexdigest()[:6]}")
        taken.add(short)
    return labels


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def _variant_labels(variants: list[dict], words: dict[str, str]) -> list[str]:
    labels = [str(v.get("label") or "_".join(f"{words.get(k, k.split('.')[-1])}={label(x)}"
                                             for k, x in v.items())) if v else "" for v in variants]
    for text in set(labels):
        if labels.count(text) > 1:
            raise ConfigError(f"sweep.variants: {labels.count(text)} variants are named {text!r}; "
                              "give each a distinct label")
    return labels


def _refuse_duplicate_cells(cells: list[Cell]) -> None:
    seen: dict[str, str] = {}
    for cell in cells:
        plain = to_dict(cell.config)
        del plain["name"]
        key = _canonical(plain)
        if key in seen:
            raise ConfigError(f"sweep cells {seen[key]!r} and {cell.name!r} are the same run; "
                              "remove one of the values or variants that make them")
        seen[key] = cell.name
    names = [c.name for c in cells]
    if len(set(names)) != len(names):  # cannot happen with injective labels; kept as the guarantee
        raise ConfigError(f"two sweep cells would share the name {next(n for n in names if names.count(n) > 1)!r}")
