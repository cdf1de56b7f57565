"""The config reference page is generated from the config dataclasses and kept current."""

from __future__ import annotations

import dataclasses
import typing
from pathlib import Path

from gdsoftmax.engine.config.reference import _field_meanings, config_keys, reference_markdown
from gdsoftmax.engine.config.schema import ExperimentConfig

PAGE = Path(__file__).resolve().parents[3] / "docs" / "config-reference.md"


def leaf_keys(cls, prefix=""):
    for name, hint in typing.get_type_hints(cls).items():
        if dataclasses.is_dataclass(hint):
            yield from leaf_keys(hint, f"{prefix}{name}.")
        else:
            yield prefix + name


def test_the_committed_page_is_current():
    assert PAGE.read_text() == reference_markdown(), (
        "regenerate it: python -m gdsoftmax.engine.config.reference docs/config-reference.md")


def test_every_key_is_listed_once_with_a_meaning():
    keys = config_keys()
    assert sorted(k.name for k in keys) == sorted(leaf_keys(ExperimentConfig))
    assert [k.name for k in keys if not k.meaning] == []


def test_types_and_defaults_come_from_the_dataclasses():
    keys = {k.name: k for k in config_keys()}
    defaults = ExperimentConfig()
    assert keys["train.batch_size"].default == str(defaults.train.batch_size)
    assert keys["train.lr_milestones"].default == str(defaults.train.lr_milestones)
    assert keys["data.dataset"].default == f'"{defaults.data.dataset}"'
    assert keys["train.channels_last"].default == "false"
    assert keys["data.val_size"].type == "int | float"
    assert "`bf16`" in keys["train.precision"].meaning  # the accepted values, from validation's own list


def test_a_comment_beside_or_above_a_field_is_its_meaning():
    source = ("class A:\n"
              "    x: int = 1  # beside\n"
              "    # above, first line\n"
              "    # above, second line\n"
              "    y: int = 2\n"
              "    z: int = 3\n")
    assert _field_meanings(source) == {("A", "x"): "beside", ("A", "y"): "above, first line above, second line",
                                       ("A", "z"): ""}
