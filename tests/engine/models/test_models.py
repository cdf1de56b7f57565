"""Every registered model: logits, penultimate features, the 2-unit option."""

from __future__ import annotations

import pytest
import torch

from gdsoftmax.engine.models.registry import MODELS, build_model

# (name, input shape, expected parameter count in millions for 10 classes, 32x32x3 unless noted)
EXPECTED_MILLIONS = {"resnet18": 11.17, "resnet34": 21.28, "resnet50": 23.52, "vgg16": 14.73, "mobilenet_v1": 3.22}


IMAGE_MODELS = sorted(name for name in MODELS if name != "gpt")  # gpt reads tokens: test_language_model.py


@pytest.mark.parametrize("name", IMAGE_MODELS)
@pytest.mark.parametrize("penultimate_dim", [None, 2])
def test_logits_and_features(name, penultimate_dim):
    shape = (1, 28, 28) if name == "fcnn" else (3, 32, 32)
    model = build_model(name, shape, num_classes=7, penultimate_dim=penultimate_dim).eval()
    x = torch.randn(2, *shape)
    logits, features = model(x, return_features=True)
    assert logits.shape == (2, 7)
    assert features.shape[0] == 2
    assert (penultimate_dim is None or features.shape[1] == 2)
    torch.testing.assert_close(model(x), logits)
    torch.testing.assert_close(model.classifier(features), logits)


@pytest.mark.parametrize(("name", "millions"), sorted(EXPECTED_MILLIONS.items()))
def test_standard_depths_have_the_usual_size(name, millions):
    # CIFAR-style variants as commonly reported (e.g. ResNet18 11.2 M, VGG16-BN 14.7 M, MobileNetV1 3.2 M)
    count = sum(p.numel() for p in build_model(name, (3, 32, 32), 10).parameters()) / 1e6
    assert count == pytest.approx(millions, rel=0.02)


def test_fcnn_is_the_papers_network():
    model = build_model("fcnn", (1, 28, 28), 10)
    shapes = [tuple(p.shape) for p in model.parameters()]
    assert shapes == [(50, 784), (50,), (20, 50), (20,), (10, 20), (10,)]


def test_model_options_reach_the_constructor():
    model = build_model("fcnn", (1, 8, 8), 10, hidden=[7])
    assert sum(p.numel() for p in model.parameters()) == 64 * 7 + 7 + 7 * 10 + 10


def test_resnet35_has_35_weighted_layers():
    model = build_model("resnet35", (3, 32, 32), 10)
    main_path = [m for name, m in model.named_modules()
                 if isinstance(m, torch.nn.Conv2d | torch.nn.Linear) and "shortcut" not in name]
    assert len(main_path) == 35


def test_unknown_model():
    with pytest.raises(ValueError, match="unknown model 'resnet7'"):
        build_model("resnet7", (3, 32, 32), 10)


def test_the_baby_gpt_has_nanogpts_parameter_count():
    # 4 blocks of 12 d^2 + 2 d (no biases) at d = 128, the (65, 128) embedding shared with the output layer and
    # the final norm: 0.80 M, the count nanoGPT prints (without the position embedding)
    model = build_model("gpt", (64,), 65)
    count = sum(p.numel() for p in model.parameters()) - model.position_embedding.weight.numel()
    assert count == 4 * (12 * 128**2 + 2 * 128) + 65 * 128 + 128 == 795_904
