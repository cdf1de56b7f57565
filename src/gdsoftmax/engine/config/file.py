"""Reading a config file, with nothing heavier than the standard library: the command line refuses a missing or
malformed file through this before torch is imported (several seconds), and :func:`gdsoftmax.engine.config.schema.
load_config` reads through it too, so both say the same one line.

>>> read_config_file("no/such.toml")
Traceback (most recent call last):
...
gdsoftmax.engine.config.file.ConfigFileError: config file no/such.toml does not exist
"""

from __future__ import annotations

import tomllib
from pathlib import Path

__all__ = ["ConfigFileError", "read_config_file"]


class ConfigFileError(ValueError):
    """A config file that cannot be read as TOML: missing, a folder, not UTF-8, or not valid TOML."""


def read_config_file(path: str | Path) -> dict:
    """The tables of the TOML file at ``path``; :class:`ConfigFileError` in one line naming the fix otherwise."""
    path = Path(path)
    if path.is_dir():
        raise ConfigFileError(f"{path} is a folder, not a config file; name a TOML file, e.g. "
                              "configs/digits_sweep.toml")
    if not path.is_file():
        raise ConfigFileError(f"config file {path} does not exist")
    try:
        return tomllib.loads(path.read_text(encoding="utf-8"))
    except UnicodeDecodeError as error:
        raise ConfigFileError(f"{path} is not UTF-8 text ({error.reason} at byte {error.start}); save it as UTF-8") \
            from error
    except tomllib.TOMLDecodeError as error:
        raise ConfigFileError(f"{path} is not valid TOML: {error}") from error
