"""Config parsing, validation errors that name the key, overrides and sweep expansion."""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest

from gdsoftmax.engine.config.schema import ConfigError, load_config, parse_config, parse_override
from gdsoftmax.engine.sweeps.grid import expand_sweep
from gdsoftmax.loss.schedules import Constant, Linear

CONFIGS = sorted((Path(__file__).resolve().parents[3] / "configs").glob("*.toml"))


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.name)
def test_shipped_configs_are_valid(path):
    if path.name.startswith("lab_peeled"):  # the layer-peeled lab has a schema of its own
        from gdsoftmax.labs.peeled_lab import load_peeled_config

        assert load_peeled_config(path).settings
        return
    config = load_config(path)
    cells = expand_sweep(config)
    assert cells
    assert len({name for name, _ in cells}) == len(cells)


def test_paper_grids():
    mnist = load_config(Path(__file__).resolve().parents[3] / "configs" / "mnist_fcnn.toml")
    assert (mnist.train.epochs, mnist.train.lr, mnist.train.batch_size, mnist.train.momentum) == (100, 1e-3, 100, 0.9)
    assert len(expand_sweep(mnist)) == 9 * 3
    cifar = load_config(Path(__file__).resolve().parents[3] / "configs" / "cifar10_deep.toml")
    assert len(expand_sweep(cifar)) == 4 * 6 * 3
    assert cifar.train.epochs == 200


@pytest.mark.parametrize(("raw", "message"), [
    ({"trian": {}}, "unknown key 'trian'"),
    ({"train": {"epoch": 3}}, "unknown key 'train.epoch'"),
    ({"train": {"epochs": "ten"}}, "train.epochs must be int, got 'ten'"),
    ({"train": {"epochs": 0}}, "train.epochs must be >= 1"),
    ({"train": {"lr": -1.0}}, "train.lr must be > 0"),
    ({"train": {"lr_milestones": [0.5, 1.5]}}, "train.lr_milestones"),
    ({"data": {"dataset": "imagenet"}}, "data.dataset must be one of"),
    ({"data": {"augment": "yes"}}, "data.augment must be bool"),
    ({"model": {"name": "resnet7"}}, "model.name must be one of"),
    ({"model": {"name": "fcnn", "options": {"width": 3}}}, "model.options.width is not an option of fcnn"),
    ({"loss": {"beta": 0.0}}, "loss.beta: value must be a finite number > 0"),
    ({"loss": {"beta": {"kind": "linear", "start": 0.1}}}, "loss.beta: .*needs the key"),
    ({"loss": {"tau": 0}}, "loss.tau must be > 0"),
    ({"name": "../escape"}, "name may hold only"),
    ({"sweep": {"loss.beta": [1.0, -2.0]}}, "loss.beta: value must be a finite number > 0"),
    ({"sweep": {"train.epochz": [1]}}, "unknown key 'train.epochz'"),
    ({"sweep": {"seed": 3}}, "sweep.seed must be a non-empty list"),
])
def test_invalid_configs_name_the_key(raw, message):
    with pytest.raises(ConfigError, match=message):
        parse_config(raw)


def test_overrides_are_toml_values(tmp_path):
    path = tmp_path / "c.toml"
    path.write_text('name = "x"\n[train]\nepochs = 3\n')
    config = load_config(path, ["train.epochs=7", "loss.beta={kind='linear', start=0.1, end=1.0, epochs=2}",
                                "data.dataset=digits", "train.lr_milestones=[0.3]"])
    assert config.train.epochs == 7
    assert config.data.dataset == "digits"
    assert config.train.lr_milestones == [0.3]
    assert config.loss.beta.schedule(steps_per_epoch=10) == Linear(0.1, 1.0, 20)
    assert parse_override("loss.beta=0.5") == ("loss.beta", 0.5)
    swept = load_config(path, ["sweep.loss.beta=[0.1, 1.0]", "sweep.seed=[0, 1, 2]"])
    assert swept.sweep == {"loss.beta": [0.1, 1.0], "seed": [0, 1, 2]}
    with pytest.raises(ConfigError, match=r"section\.key=value"):
        parse_override("epochs")


def test_missing_or_broken_file(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(tmp_path / "nope.toml")
    (tmp_path / "bad.toml").write_text("[train\n")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_config(tmp_path / "bad.toml")


def test_sweep_cells_are_named_from_their_values():
    config = parse_config({"name": "s", "sweep": {"loss.beta": [0.1, {"kind": "linear", "start": 0.01, "end": 0.1,
                                                                       "epochs": 5}], "seed": [0, 1]}})
    cells = expand_sweep(config)
    assert [n for n, _ in cells] == ["beta=0.1_seed=0", "beta=0.1_seed=1", "beta=linear0.01-0.1_seed=0",
                                     "beta=linear0.01-0.1_seed=1"]
    assert cells[1][1].seed == 1
    assert cells[1][1].loss.beta == 0.1
    assert cells[1][1].sweep == {}
    assert cells[0][1].loss.beta.schedule(10) == Constant(0.1)


def test_sweep_variants_set_several_keys_per_cell():
    config = parse_config({"name": "v", "sweep": {"seed": [0, 1], "variants": [
        {"label": "ce", "loss.beta": 1.0},
        {"label": "focal", "loss.name": "focal", "loss.options": {"gamma": 3.0}},
        {"loss.name": "cosface"}]}})
    cells = dict(expand_sweep(config))
    assert list(cells) == ["ce_seed=0", "ce_seed=1", "focal_seed=0", "focal_seed=1", "name=cosface_seed=0",
                           "name=cosface_seed=1"]
    assert cells["focal_seed=1"].loss.options == {"gamma": 3.0}
    assert cells["focal_seed=1"].seed == 1
    with pytest.raises(ConfigError, match=r"variants\[0\] must be a table"):
        parse_config({"sweep": {"variants": [{"label": "x"}]}})
    with pytest.raises(ConfigError, match="not an option of the focal loss"):
        parse_config({"sweep": {"variants": [{"loss.name": "focal", "loss.options": {"s": 1.0}}]}})


def test_resolved_config_round_trips(tmp_path):
    import tomli_w

    from gdsoftmax.engine.config.schema import to_dict

    config = parse_config({"name": "r", "loss": {"beta": {"kind": "step", "start": 1.0, "gamma": 0.5,
                                                          "milestones": [3]}}, "train": {"epochs": 4}})
    path = tmp_path / "config.toml"
    path.write_text(tomli_w.dumps(to_dict(config)))
    assert load_config(path) == config
    assert tomllib.loads(path.read_text())["train"]["epochs"] == 4
