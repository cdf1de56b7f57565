"""The paper's models, with a registry so configs can name them.

Every model is ``features -> [optional bottleneck] -> classifier``:
``model(x)`` returns logits (B, K) and ``model(x, return_features=True)`` returns
``(logits, features)`` with the penultimate features (B, D). ``penultimate_dim=2`` adds a
2-unit linear layer before the classifier, for the 2-D feature plots of the paper's Fig. 1.

>>> model = build_model("fcnn", image_shape=(1, 28, 28), num_classes=10, penultimate_dim=2)
>>> logits, features = model(torch.zeros(4, 1, 28, 28), return_features=True)
>>> tuple(logits.shape), tuple(features.shape)
((4, 10), (4, 2))
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import nn

from gdsoftmax.engine.models.classifier import Classifier
from gdsoftmax.engine.models.library import build_library_model, is_library_model
from gdsoftmax.engine.models.transformer import gpt
from gdsoftmax.engine.models.user import build_user_model
from gdsoftmax.engine.workspace.user_code import is_import_path

__all__ = ["MODELS", "Classifier", "build_model"]


# ---- fully connected --------------------------------------------------------------------------


def fcnn(image_shape, num_classes, penultimate_dim=None, hidden=(50, 20)):
    """The paper's MNIST network: flatten, then fully connected layers of 50 and 20 units. The paper names
    no activation; ReLU is our choice."""
    layers, width = [nn.Flatten()], math.prod(image_shape)
    for units in hidden:
        layers += [nn.Linear(width, units), nn.ReLU()]
        width = units
    return Classifier(nn.Sequential(*layers), width, num_classes, penultimate_dim)


def homogeneous_mlp(image_shape, num_classes, penultimate_dim=None, hidden=(64, 32)) -> Classifier:
    """A bias-free ReLU MLP, homogeneous of order (number of linear layers) in its parameters."""
    layers, width = [nn.Flatten()], math.prod(image_shape)
    for units in hidden:
        layers += [nn.Linear(width, units, bias=False), nn.ReLU()]
        width = units
    model = Classifier(nn.Sequential(*layers), width, num_classes, penultimate_dim)
    if penultimate_dim:  # bias-free bottleneck: still homogeneous, one order higher
        model.bottleneck = nn.Linear(width, penultimate_dim, bias=False)
    model.classifier = nn.Linear(penultimate_dim or width, num_classes, bias=False)
    return model


# ---- convolutional ----------------------------------------------------------------------------


def _conv_bn(cin, cout, stride=1, groups=1, kernel=3):
    return nn.Sequential(nn.Conv2d(cin, cout, kernel, stride, kernel // 2, groups=groups, bias=False),
                         nn.BatchNorm2d(cout), nn.ReLU(inplace=True))


def small_cnn(image_shape, num_classes, penultimate_dim=None, width=16):
    """A compact CNN (4 conv layers, ~0.1 M parameters at width 16) for CIFAR-10 on 2 CPU cores."""
    c = image_shape[0]
    body = nn.Sequential(
        _conv_bn(c, width), nn.MaxPool2d(2),
        _conv_bn(width, 2 * width), nn.MaxPool2d(2),
        _conv_bn(2 * width, 4 * width), _conv_bn(4 * width, 4 * width),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(),
    )
    return Classifier(body, 4 * width, num_classes, penultimate_dim)


class _Residual(nn.Module):
    """x + f(x) with f two 3x3 conv-BN-ReLU layers of the same width."""

    def __init__(self, channels):
        super().__init__()
        self.body = nn.Sequential(_conv_bn(channels, channels), _conv_bn(channels, channels))

    def forward(self, x):
        return x + self.body(x)


def resnet9(image_shape, num_classes, penultimate_dim=None, width=64):
    """The 9-layer residual net of the DAWNBench CIFAR-10 entries, channels (w, 2w, 4w, 8w).

    Width 64 is the original (6.5 M parameters); width 16 (0.41 M) is our 2-core CPU study's model.
    """
    w = width
    body = nn.Sequential(
        _conv_bn(image_shape[0], w),
        _conv_bn(w, 2 * w), nn.MaxPool2d(2), _Residual(2 * w),  # 32 -> 16
        _conv_bn(2 * w, 4 * w), nn.MaxPool2d(2),  # 16 -> 8
        _conv_bn(4 * w, 8 * w), nn.MaxPool2d(2), _Residual(8 * w),  # 8 -> 4
        nn.AdaptiveMaxPool2d(1), nn.Flatten(),
    )
    return Classifier(body, 8 * w, num_classes, penultimate_dim)


class BasicBlock(nn.Module):
    expansion = 1

    def __init__(self, cin, planes, stride):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, planes, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.shortcut = _shortcut(cin, planes, stride)

    def forward(self, x):
        out = torch.relu(self.bn1(self.conv1(x)))
        return torch.relu(self.bn2(self.conv2(out)) + self.shortcut(x))


class Bottleneck(nn.Module):
    expansion = 4

    def __init__(self, cin, planes, stride):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, planes, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = nn.Conv2d(planes, planes * 4, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(planes * 4)
        self.shortcut = _shortcut(cin, planes * 4, stride)

    def forward(self, x):
        out = torch.relu(self.bn1(self.conv1(x)))
        out = torch.relu(self.bn2(self.conv2(out)))
        return torch.relu(self.bn3(self.conv3(out)) + self.shortcut(x))


def _shortcut(cin, cout, stride):
    if stride == 1 and cin == cout:
        return nn.Identity()
    return nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))


def _resnet(block, counts):
    """CIFAR-style ResNet: a 3x3 stem without max-pool, four stages of 64-512 planes."""

    def build(image_shape, num_classes, penultimate_dim=None):
        layers, cin = [_conv_bn(image_shape[0], 64)], 64
        for stage, (planes, count) in enumerate(zip((64, 128, 256, 512), counts, strict=True)):
            for i in range(count):
                layers.append(block(cin, planes, 2 if stage > 0 and i == 0 else 1))
                cin = planes * block.expansion
        layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten()]
        return Classifier(nn.Sequential(*layers), cin, num_classes, penultimate_dim)

    build.__doc__ = f"CIFAR-style ResNet with {block.__name__} counts {counts}."
    return build


def vgg16(image_shape, num_classes, penultimate_dim=None):
    """VGG16 with batch norm (13 conv layers), CIFAR-style: one 512-unit feature after global pooling."""
    layers, cin = [], image_shape[0]
    for v in (64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M"):
        if v == "M":
            layers.append(nn.MaxPool2d(2))
        else:
            layers.append(_conv_bn(cin, v))
            cin = v
    layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten()]
    return Classifier(nn.Sequential(*layers), 512, num_classes, penultimate_dim)


def mobilenet_v1(image_shape, num_classes, penultimate_dim=None):
    """MobileNetV1 (depthwise-separable convolutions), CIFAR-style stem with stride 1."""
    plan = [(64, 1), (128, 2), (128, 1), (256, 2), (256, 1), (512, 2), *[(512, 1)] * 5, (1024, 2), (1024, 1)]
    layers, cin = [_conv_bn(image_shape[0], 32)], 32
    for cout, stride in plan:
        layers += [_conv_bn(cin, cin, stride, groups=cin), _conv_bn(cin, cout, kernel=1)]
        cin = cout
    layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten()]
    return Classifier(nn.Sequential(*layers), 1024, num_classes, penultimate_dim)


MODELS: dict[str, Callable[..., Classifier]] = {
    "fcnn": fcnn,
    "homogeneous_mlp": homogeneous_mlp,
    "small_cnn": small_cnn,
    "resnet9": resnet9,
    "resnet18": _resnet(BasicBlock, (2, 2, 2, 2)),
    "resnet34": _resnet(BasicBlock, (3, 4, 6, 3)),
    # "ResNet35" is not a standard depth. We read it as bottleneck blocks (2, 3, 4, 2):
    # 1 stem conv + 11 blocks x 3 convs + 1 classifier = 35 weighted layers.
    "resnet35": _resnet(Bottleneck, (2, 3, 4, 2)),
    "resnet50": _resnet(Bottleneck, (3, 4, 6, 3)),
    "vgg16": vgg16,
    "mobilenet_v1": mobilenet_v1,
    "gpt": gpt,  # a decoder-only transformer for token streams (data.dataset a text corpus)
}


def build_model(name: str, image_shape, num_classes: int, penultimate_dim: int | None = None, **options) -> nn.Module:
    """A registered model, a timm / torchvision one ("timm:NAME"), or the user's own ("mypkg.nets:build", see
    :mod:`gdsoftmax.engine.models.user`), for inputs of ``image_shape`` (C, H, W)."""
    if is_import_path(name):
        return build_user_model(name, tuple(image_shape), num_classes, penultimate_dim, **options)
    if is_library_model(name):
        return build_library_model(name, tuple(image_shape), num_classes, penultimate_dim, **options)
    if name not in MODELS:
        raise ValueError(f"unknown model {name!r}; choose one of {sorted(MODELS)}")
    try:
        return MODELS[name](tuple(image_shape), num_classes, penultimate_dim, **options)
    except (TypeError, ValueError) as error:  # an option of the wrong type or range
        raise ValueError(f"model.options {options} do not fit model {name!r} ({error}); see its signature in "
                         "gdsoftmax.engine.models.registry") from error
    except RuntimeError as error:
        if "allocate" not in str(error):
            raise
        raise ValueError(f"model {name!r} with model.penultimate_dim = {penultimate_dim} and model.options = "
                         f"{options} does not fit in this machine's memory; make it smaller") from error
