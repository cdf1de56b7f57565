"""The user's own model and data: by import path ("module:callable", written by the test), npz:, folder:, and as
Python objects through gdsoftmax.api; their source in the runs' identity; one line for each way they can be wrong."""

from __future__ import annotations

import json
import textwrap
import uuid
from pathlib import Path

import numpy as np
import pytest
import torch

from gdsoftmax import api
from gdsoftmax.cli import main
from gdsoftmax.engine.data.images import load_dataset
from gdsoftmax.engine.models.user import UserModel

NETS = """
import math
from torch import nn


def build(num_classes, image_shape, width=16):
    return nn.Sequential(nn.Flatten(), nn.Linear(math.prod(image_shape), width), nn.ReLU(),
                         nn.Linear(width, num_classes))


def not_a_module(num_classes, **options):
    return "a string"


def wrong_width(num_classes, image_shape, **options):
    return nn.Sequential(nn.Flatten(), nn.Linear(math.prod(image_shape), num_classes + 1))


def raises(num_classes, **options):
    raise RuntimeError("boom in the user's factory")
"""

DATA = """
import torch
from sklearn.datasets import load_digits
from torch.utils.data import TensorDataset


def load():
    bunch = load_digits()
    images = torch.tensor(bunch.images, dtype=torch.float32).unsqueeze(1) / 16
    labels = torch.tensor(bunch.target)
    return TensorDataset(images[:1000], labels[:1000]), TensorDataset(images[1000:1300], labels[1000:1300])


def three():
    return 1, 2, 3
"""

CONFIG = """name = "own"
[data]
dataset = "{data}"
[model]
name = "{model}"
options = {{ width = 24 }}
[train]
epochs = 2
[sweep]
"loss.beta" = [1.0, 5.0]
seed = [0, 1]
"""


@pytest.fixture
def user_modules(tmp_path, monkeypatch):
    """Two modules of unique names (a module imported by one test is never another's) on the Python path."""
    suffix = uuid.uuid4().hex[:8]
    names = {"nets": f"usernets_{suffix}", "data": f"userdata_{suffix}"}
    (tmp_path / f"{names['nets']}.py").write_text(NETS)
    (tmp_path / f"{names['data']}.py").write_text(DATA)
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.chdir(tmp_path)
    return names


def write_config(tmp_path: Path, model: str, data: str) -> Path:
    path = tmp_path / "own.toml"
    path.write_text(CONFIG.format(model=model, data=data))
    return path


def test_own_model_and_data_sweep_report_and_refuse_changed_source(tmp_path, user_modules, capsys):
    config = write_config(tmp_path, f"{user_modules['nets']}:build", f"{user_modules['data']}:load")
    out = tmp_path / "runs"
    assert main(["sweep", str(config), "--out", str(out), "--no-progress"]) == 0
    cells = sorted(p.name for p in (out / "own").iterdir() if p.is_dir())
    assert cells == ["beta=1_seed=0", "beta=1_seed=1", "beta=5_seed=0", "beta=5_seed=1"]
    recorded = json.loads((out / "own" / "beta=1_seed=0" / "run.json").read_text())
    identity = recorded.get("identity", recorded)
    assert len(identity["model.source"]) == 16
    assert len(identity["data.source"]) == 16
    rows = (out / "own" / "beta=5_seed=1" / "metrics.jsonl").read_text().splitlines()
    assert len(rows) == 2

    assert main(["report", str(out / "own")]) == 0
    report = (out / "own" / "report.md").read_text()
    assert report.splitlines()[2] == "## Verdict"
    assert f"{user_modules['nets']}:build" in report

    capsys.readouterr()
    assert main(["sweep", str(config), "--out", str(out), "--no-progress"]) == 0  # read back, nothing retrained
    assert (out / "own" / "beta=5_seed=1" / "metrics.jsonl").read_text().splitlines() == rows

    nets = tmp_path / f"{user_modules['nets']}.py"
    nets.write_text(nets.read_text() + "\n# another version of the model's module\n")
    capsys.readouterr()
    assert main(["sweep", str(config), "--out", str(out), "--no-progress"]) == 2
    error = capsys.readouterr().err.strip().splitlines()
    assert len(error) == 1
    assert "model.source" in error[0]
    assert "--restart" in error[0]


def test_the_api_takes_python_objects_and_keeps_their_identity(tmp_path):
    def build(num_classes, image_shape):
        return torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, num_classes))

    def load():
        images = torch.rand(200, 1, 8, 8)
        labels = torch.arange(200) % 4
        return (torch.utils.data.TensorDataset(images[:150], labels[:150]),
                torch.utils.data.TensorDataset(images[150:], labels[150:]))

    raw = {"name": "notebook", "data": {"val_size": 30}, "train": {"epochs": 1},
           "sweep": {"loss.beta": [1.0, 2.0]}}
    results = api.sweep(raw, tmp_path, model=build, data=load, progress=False)
    assert [r["cell"] for r in results] == ["beta=1", "beta=2"]
    config = (tmp_path / "notebook" / "beta=1" / "config.toml").read_text()
    assert 'name = "python:' in config
    assert 'dataset = "python:' in config
    assert api.sweep(raw, tmp_path, model=build, data=load, progress=False)[0]["cell"] == "beta=1"  # reused

    def build(num_classes, image_shape):
        return torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 16), torch.nn.Linear(16, num_classes))

    with pytest.raises(ValueError, match=r"holds a run of another config: .*model.name"):
        api.sweep(raw, tmp_path, model=build, data=load, progress=False)


def test_own_model_tunes_through_the_api(tmp_path, user_modules):
    pytest.importorskip("optuna")
    raw = {"name": "own_tune", "data": {"val_size": 0.2}, "model": {"name": f"{user_modules['nets']}:build"},
           "train": {"epochs": 2}, "tune": {"objective": "val_nll", "trials": 2,
                                              "space": {"loss.beta": {"low": 0.5, "high": 5.0, "log": True}}}}
    path = api.tune(raw, tmp_path / "runs", progress=False)
    assert path.name == "report.md"
    assert (path.parent / "best.toml").is_file()
    assert f'name = "{user_modules["nets"]}:build"' in (path.parent / "best.toml").read_text()


def test_npz_sources_in_either_layout_and_dtype(tmp_path):
    rng = np.random.default_rng(0)
    channels_last = rng.integers(0, 256, (40, 8, 8, 3), dtype=np.uint8)
    np.savez(tmp_path / "hwc.npz", train_images=channels_last[:30], train_labels=np.arange(30) % 3,
             test_images=channels_last[30:], test_labels=np.arange(10) % 3)
    data = load_dataset(f"npz:{tmp_path / 'hwc.npz'}", val_size=6)
    assert data.image_shape == (3, 8, 8)
    assert data.num_classes == 3
    assert data.pixel_max == 255.0
    assert torch.equal(data.test.images[0], torch.from_numpy(channels_last[30]).permute(2, 0, 1))
    floats = rng.random((20, 1, 6, 6)).astype(np.float32)
    np.savez(tmp_path / "float.npz", train_images=floats[:15], train_labels=np.arange(15) % 2,
             test_images=floats[15:], test_labels=np.arange(5) % 2)
    data = load_dataset(f"npz:{tmp_path / 'float.npz'}", val_size=0)
    assert data.image_shape == (1, 6, 6)
    assert data.pixel_max == 1.0
    assert data.train.images.dtype == torch.float32


def test_a_folder_tree_reads_its_classes_in_sorted_order(tmp_path):
    from PIL import Image

    for split, count in (("train", 4), ("test", 2)):
        for shade, label in ((30, "cat"), (200, "dog")):
            folder = tmp_path / "tree" / split / label
            folder.mkdir(parents=True)
            for i in range(count):
                Image.new("RGB", (10, 12), (shade, i, 0)).save(folder / f"{i}.png")
    data = load_dataset(f"folder:{tmp_path / 'tree'}", val_size=0)
    assert data.image_shape == (3, 12, 10)
    assert data.num_classes == 2
    assert data.train.labels.tolist() == [0] * 4 + [1] * 4
    assert data.train.images[-1, 0].unique().tolist() == [200]


def test_the_features_are_the_input_of_the_class_layer():
    torch.manual_seed(0)
    module = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(12, 5), torch.nn.Tanh(), torch.nn.Linear(5, 3))
    x = torch.randn(4, 1, 3, 4)
    logits, features = UserModel(module, 3)(x, return_features=True)
    reference = torch.tanh(x.double().flatten(1) @ module[1].weight.double().T + module[1].bias.double())
    torch.testing.assert_close(features.double(), reference)
    torch.testing.assert_close(logits, module(x))


BAD_MODELS = [
    ("nosuchmodule_zz:build", "no module named 'nosuchmodule_zz'"),
    ("{nets}:missing", "has no 'missing'"),
    ("{nets}:raises", "raised RuntimeError: boom in the user's factory"),
    ("{nets}:not_a_module", "returned a str, not a torch.nn.Module"),
    ("{nets}:wrong_width", "it must return logits of shape (batch, 10)"),
]


@pytest.mark.parametrize(("model", "message"), BAD_MODELS)
def test_a_bad_model_is_one_line_naming_the_key(tmp_path, user_modules, capsys, model, message):
    config = write_config(tmp_path, model.format(nets=user_modules["nets"]), "digits")
    assert main(["train", str(config), "--out", str(tmp_path / "runs"), "--no-progress"]) == 2
    error = capsys.readouterr().err.strip().splitlines()
    assert len(error) == 1
    assert "model.name" in error[0]
    assert message in error[0]
    assert not (tmp_path / "runs" / "own").exists()


@pytest.mark.parametrize(("dataset", "set_key", "message"), [
    ("{data}:three", None, "must return (train, test)"),
    ("npz:absent.npz", None, "no such file"),
    ("digits", "model.penultimate_dim=2", "put a bottleneck layer in it"),
])
def test_bad_data_is_one_line_naming_the_key(tmp_path, user_modules, capsys, dataset, set_key, message):
    config = write_config(tmp_path, f"{user_modules['nets']}:build", dataset.format(data=user_modules["data"]))
    extra = ["--set", set_key] if set_key else []
    assert main(["train", str(config), "--out", str(tmp_path / "runs"), "--no-progress", *extra]) == 2
    error = capsys.readouterr().err.strip().splitlines()
    assert len(error) == 1
    assert message in error[0]
    assert ("data.dataset" in error[0]) or ("model.penultimate_dim" in error[0])


def test_the_module_is_found_from_the_working_directory(tmp_path, monkeypatch, capsys):
    """As `python -m` would: a module beside the config, in the folder the command runs from."""
    name = f"herenets_{uuid.uuid4().hex[:8]}"
    (tmp_path / f"{name}.py").write_text(textwrap.dedent(NETS))
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr("sys.path", [p for p in __import__("sys").path if p not in ("", str(tmp_path))])
    config = write_config(tmp_path, f"{name}:build", "digits")
    assert main(["train", str(config), "--out", "runs", "--no-progress", "--set", "train.epochs=1"]) == 0


def test_own_model_and_data_train_and_report_through_the_api_and_tune_through_the_cli(tmp_path, user_modules):
    model, data = f"{user_modules['nets']}:build", f"{user_modules['data']}:load"
    result = api.train(write_config(tmp_path, model, data), tmp_path / "one", overrides=["train.epochs=1"],
                       progress=False)
    assert result["cell"] == "own"
    assert result["epochs"] == 1
    api.sweep(write_config(tmp_path, model, data), tmp_path / "runs", progress=False)
    assert api.report(tmp_path / "runs" / "own").read_text().splitlines()[2] == "## Verdict"
    pytest.importorskip("optuna")
    config = tmp_path / "tune.toml"
    config.write_text(CONFIG.format(model=model, data=data).split("[sweep]")[0].replace('name = "own"', 'name = "t"')
                      + '[tune]\ntrials = 2\n[tune.space]\n"loss.beta" = { low = 0.5, high = 5.0, log = true }\n')
    assert main(["tune", str(config), "--out", str(tmp_path / "tuned"), "--no-progress"]) == 0
    assert (tmp_path / "tuned" / "t" / "reference" / "result.json").is_file()


def test_the_api_reads_overrides_as_the_command_line_does():
    """A quoted sweep key (as a TOML file writes it) names the same key through a dict as through a file."""
    config = api.config({"name": "q"}, ['sweep."loss.beta"=[1.0, 2.0]', "train.epochs=3"])
    assert list(config.sweep) == ["loss.beta"]
    assert config.train.epochs == 3
