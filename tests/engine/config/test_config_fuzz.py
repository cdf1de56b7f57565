"""Any config or override ends in a parsed config or a ConfigError that names the key (Hypothesis)."""

from __future__ import annotations

import contextlib
import dataclasses

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gdsoftmax.engine.config.schema import (
    ConfigError,
    DataConfig,
    LossConfig,
    ModelConfig,
    TrainConfig,
    load_config,
    parse_config,
    parse_override,
)

KEYS = {"name", "seed", "data", "model", "loss", "train", "sweep", "dataset", "val_size", "split_seed", "augment",
        "penultimate_dim", "options", "beta", "tau", "label_smoothing", "backend", "epochs", "lr", "momentum",
        "batch_size", "lr_milestones", "grad_clip", "device", "precision", "kind", "start", "end", "steps", "x"}
scalars = st.one_of(st.none(), st.booleans(), st.integers(-10**30, 10**30), st.floats(allow_nan=True),
                    st.text(max_size=8))
values = st.recursive(scalars, lambda inner: st.one_of(st.lists(inner, max_size=3),
                                                       st.dictionaries(st.sampled_from(sorted(KEYS)), inner,
                                                                       max_size=3)), max_leaves=12)

def section(cls):
    """A table of the section's own keys with values of any type: the parser's type checks are exercised."""
    return st.dictionaries(st.sampled_from([f.name for f in dataclasses.fields(cls)]), values, max_size=4)


sweep_keys = st.sampled_from(["loss.beta", "seed", "train.lr", "model.name", "data.split_seed", "variants", "x.y"])
configs = st.one_of(
    st.dictionaries(st.sampled_from(sorted(KEYS)), values, max_size=5),
    st.fixed_dictionaries({}, optional={"name": scalars, "seed": scalars, "data": section(DataConfig),
                                        "model": section(ModelConfig), "loss": section(LossConfig),
                                        "train": section(TrainConfig),
                                        "sweep": st.dictionaries(sweep_keys, values, max_size=2)}),
)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(configs)
def test_any_config_is_parsed_or_refused_with_a_config_error(raw):
    with contextlib.suppress(ConfigError):  # the one exception a bad config may raise
        parse_config(raw)


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=30))
def test_any_override_is_parsed_or_refused_with_a_config_error(text):
    try:
        key, _ = parse_override(text)
    except ConfigError:
        return
    assert key


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.sampled_from(sorted(KEYS)), st.sampled_from(["train.", "loss.", "data.", "model.", "", "sweep."]),
       st.text(max_size=12))
def test_any_set_on_a_file_is_parsed_or_refused(tmp_path, key, prefix, value):
    path = tmp_path / "c.toml"
    path.write_text('name = "c"\n')
    with contextlib.suppress(ConfigError):
        load_config(path, [f"{prefix}{key}={value}"])


@pytest.mark.parametrize(("content", "message"), [
    (b"name = \"c\"\n\xff\xfe", "is not UTF-8 text"),
    (b"[train]\nepochs = 1e400\n", "train.epochs must be int"),
    (b"[train]\nlr = 1e400\n", "train.lr must be > 0"),
    (b"[train\n", "is not valid TOML"),
])
def test_bad_files_are_config_errors(tmp_path, content, message):
    path = tmp_path / "c.toml"
    path.write_bytes(content)
    with pytest.raises(ConfigError, match=message):
        load_config(path)
