"""Models by name from timm and torchvision (model.name = "timm:NAME" / "torchvision:NAME"): they train in
the engine on CIFAR-shaped synthetic data with the data's class count, the CIFAR stem replaces the
ImageNet one, and a missing library or an unknown name is one line that names the fix."""

from __future__ import annotations

import importlib.util
import json

import pytest
import torch

from gdsoftmax.cli import main
from gdsoftmax.engine.config.schema import ConfigError, parse_config
from gdsoftmax.engine.loop.trainer import run_experiment
from gdsoftmax.engine.models.registry import build_model
from synthetic import synthetic_images

pytest.importorskip("timm")


@pytest.fixture(scope="module")
def cifar_shaped():
    return synthetic_images(n=320, classes=4, shape=(3, 32, 32))


@pytest.mark.parametrize(("name", "options"), [("timm:test_resnet", {}), ("torchvision:mobilenet_v3_small", {})])
def test_a_library_model_trains_in_the_engine(tmp_path, cifar_shaped, name, options):
    config = parse_config({"name": "lib", "model": {"name": name, "options": options, "penultimate_dim": 0},
                           "train": {"epochs": 2, "batch_size": 64, "lr": 0.02, "record_epochs": [2],
                                     "optimizer": "adamw", "lr_schedule": "cosine", "warmup_steps": 2}})
    run_experiment(config, tmp_path / "run", data=cifar_shaped, progress=False)
    rows = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in rows] == [1, 2]
    assert all(torch.isfinite(torch.tensor([r["train_loss"], r["test_ce"]])).all() for r in rows)
    import numpy as np

    predictions = np.load(tmp_path / "run" / "predictions.npz")
    assert predictions["test_logits"].shape == (32, 4)  # the data's class count, not ImageNet's 1000


@pytest.mark.parametrize("name", ["torchvision:resnet18", "timm:resnet18"])
def test_the_cifar_stem_keeps_the_resolution_the_imagenet_stem_divides_by_four(name):
    imagenet = build_model(name, (3, 32, 32), 10)
    cifar = build_model(name, (3, 32, 32), 10, stem="cifar")
    x = torch.zeros(1, 3, 32, 32)
    first_stage = {m: m.body.maxpool(m.body.conv1(x)).shape[-1] for m in (imagenet, cifar)}
    assert (first_stage[imagenet], first_stage[cifar]) == (8, 32)
    _, features = cifar(x, return_features=True)
    assert features.shape == (1, 512)


def test_timm_takes_the_datas_channel_count_and_a_bottleneck():
    model = build_model("timm:test_resnet", (1, 28, 28), 10, penultimate_dim=2)
    logits, features = model(torch.zeros(3, 1, 28, 28), return_features=True)
    assert (tuple(logits.shape), tuple(features.shape)) == ((3, 10), (3, 2))


@pytest.mark.parametrize(("model", "message"), [
    ({"name": "timm:no_such_net"}, "model.name timm:no_such_net: 'no_such_net' is not a timm model; "
                                   "timm.list_models('resnet*') lists them"),
    ({"name": "torchvision:no_such_net"}, "model.name torchvision:no_such_net: 'no_such_net' is not a torchvision "
                                          "model; torchvision.models.list_models() lists them"),
    ({"name": "timm:resnet18", "options": {"stem": "tiny"}},
     "model.name timm:resnet18: model.options.stem must be one of ('imagenet', 'cifar'), got 'tiny'"),
    ({"name": "keras:resnet"}, "model.name = 'keras:resnet': no module named 'keras'"),
])
def test_bad_library_model_names_are_config_errors(model, message):
    with pytest.raises(ConfigError) as caught:
        parse_config({"model": model})
    assert str(caught.value).startswith(message)


def test_a_missing_library_names_the_pip_install(monkeypatch, tmp_path, capsys):
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "timm" else real(name, *a))
    with pytest.raises(ConfigError, match=r"needs the timm package, which is not installed: "
                                          r"pip install 'gdsoftmax\[timm\]'"):
        parse_config({"model": {"name": "timm:resnet18"}})
    assert main(["train", "configs/digits_sweep.toml", "--set", "model.name=timm:resnet18", "--out",
                 str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip()
    assert "pip install 'gdsoftmax[timm]'" in err
    assert "\n" not in err
    assert not any(tmp_path.iterdir())  # nothing left behind


def test_the_cifar_stem_is_refused_for_a_model_without_one():
    with pytest.raises(ValueError, match="has no ImageNet stem of the ResNet form"):
        build_model("timm:test_resnet", (3, 32, 32), 10, stem="cifar")  # a deep (three-convolution) stem


def test_torchvision_takes_grey_images_as_three_equal_channels():
    model = build_model("torchvision:resnet18", (1, 28, 28), 10).eval()
    grey = torch.rand(2, 1, 28, 28)
    assert model(grey).shape == (2, 10)
    assert torch.equal(model(grey), model(grey.repeat(1, 3, 1, 1)))  # three copies of the one channel
    with pytest.raises(ValueError, match=r"takes 3-channel \(or 1-channel\) images; the data has 2"):
        build_model("torchvision:resnet18", (2, 28, 28), 10)


@pytest.mark.parametrize("name", ["timm:lcnet_050", "timm:mobilenetv3_small_050", "torchvision:resnet18",
                                  "timm:test_mambaout"])
def test_library_models_train_on_the_digits_at_first_contact(tmp_path, name):
    config = parse_config({"name": "lib", "data": {"train_size": 128, "val_size": 64},
                           "model": {"name": name},
                           "train": {"epochs": 1, "batch_size": 64, "lr": 0.01, "optimizer": "adamw",
                                     "eval_batch_size": 512}})
    result = run_experiment(config, tmp_path / "run", progress=False)
    assert result["epochs"] == 1
    assert 0 <= result["test_acc"] <= 1


def test_a_model_whose_training_forward_returns_a_tuple_is_read_by_its_main_output():
    model = build_model("torchvision:googlenet", (3, 32, 32), 10, init_weights=False).train()
    logits = model(torch.rand(2, 3, 32, 32))
    assert logits.shape == (2, 10)  # not GoogLeNetOutputs(logits, aux2, aux1)


def test_too_small_images_and_unknown_options_are_one_line_and_leave_nothing(tmp_path, capsys):
    cases = [(["--set", "model.name='timm:convnext_nano'"], "cannot take 8x8 images: it needs at least 32x32"),
             (["--set", "model.name='timm:test_resnet'", "--set", "model.options={bogus = 1}"],
              "model.options: timm:test_resnet refuses them")]
    for overrides, message in cases:
        code = main(["train", "configs/digits_sweep.toml", "--out", str(tmp_path / "out"), "--no-progress",
                     "--set", "train.epochs=1", *overrides])
        err = capsys.readouterr().err.strip()
        assert code == 2, err
        assert message in err
        assert "\n" not in err
        assert not (tmp_path / "out").exists()
