"""Models from timm and torchvision by name: ``model.name = "timm:resnet18"`` or ``"torchvision:resnet18"``.

The library builds the network with the data's class count (timm: without its classifier,
``num_classes=0``, and with ``in_chans`` set from the data; torchvision: its last linear layer is
taken off); gdsoftmax puts its own :class:`~gdsoftmax.engine.models.Classifier` head on the
pooled features, so ``model(x, return_features=True)``, ``model.penultimate_dim`` and every report
work as for the built-in models. ``model.options`` go to the library's constructor, except
``stem``.

**The stem on 32×32 images.** An ImageNet network starts with a 7×7 convolution of stride 2 and a
3×3 max-pool of stride 2: a CIFAR image is 8×8 before the first stage and 1×1 before pooling, and
the network loses most of its accuracy. ``model.options = {stem = "cifar"}`` replaces that stem
by a 3×3 convolution of stride 1 without the pool (the usual CIFAR ResNet stem), for the models
that have one of that form (``conv1`` and ``maxpool``: the ResNet families of both libraries);
other models are refused with the reason.

>>> import torch
>>> model = build_library_model("torchvision:resnet18", (3, 32, 32), 10, None, stem="cifar")
>>> logits, features = model(torch.zeros(2, 3, 32, 32), return_features=True)
>>> tuple(logits.shape), tuple(features.shape), model.body.conv1.stride
((2, 10), (2, 512), (1, 1))
"""

from __future__ import annotations

import importlib
import importlib.util

from torch import nn

from gdsoftmax.engine.classifier import Classifier

__all__ = ["LIBRARIES", "build_library_model", "is_library_model", "library_model_problem"]

LIBRARIES = {"timm": "timm", "torchvision": "torchvision"}  # prefix -> the package it needs
STEMS = ("imagenet", "cifar")


def is_library_model(name: str) -> bool:
    return name.partition(":")[0] in LIBRARIES and ":" in name


def _known(library: str, name: str) -> bool:
    if library == "timm":
        return bool(importlib.import_module("timm").list_models(name))
    return name in importlib.import_module("torchvision.models").list_models()


def library_model_problem(name: str, options: dict) -> str | None:
    """Why ``name`` with ``options`` cannot be built here (one line that names the fix), or None."""
    library, _, model = name.partition(":")
    if importlib.util.find_spec(LIBRARIES[library]) is None:
        return f"needs the {library} package, which is not installed: pip install 'gdsoftmax[{library}]'"
    if not model or not _known(library, model):
        listing = "timm.list_models('resnet*')" if library == "timm" else "torchvision.models.list_models()"
        return f"{model!r} is not a {library} model; {listing} lists them"
    if options.get("stem", "imagenet") not in STEMS:
        return f"model.options.stem must be one of {STEMS}, got {options['stem']!r}"
    return None


def _cifar_stem(body: nn.Module, name: str) -> None:
    conv = getattr(body, "conv1", None)
    if not isinstance(conv, nn.Conv2d) or not isinstance(getattr(body, "maxpool", None), nn.MaxPool2d):
        raise ValueError(f"{name} has no ImageNet stem of the ResNet form (conv1 and maxpool) to replace; leave "
                         "model.options.stem out, or choose a ResNet")
    body.conv1 = nn.Conv2d(conv.in_channels, conv.out_channels, 3, stride=1, padding=1, bias=conv.bias is not None)
    body.maxpool = nn.Identity()


def _headless_torchvision(name: str, channels: int, num_classes: int, options: dict) -> tuple[nn.Module, int]:
    body = importlib.import_module("torchvision.models").get_model(name, num_classes=num_classes, **options)
    last = [(path, m) for path, m in body.named_modules() if isinstance(m, nn.Linear) and m.out_features == num_classes]
    if not last:
        raise ValueError(f"torchvision:{name} has no final linear layer to put gdsoftmax's classifier in place of")
    path, layer = last[-1]
    parent = body.get_submodule(path.rpartition(".")[0]) if "." in path else body
    setattr(parent, path.rpartition(".")[2], nn.Identity())
    if channels != 3:
        raise ValueError(f"torchvision:{name} takes 3-channel images; the data has {channels}: use a timm model "
                         "(it sets in_chans) or a built-in one")
    return body, layer.in_features


def build_library_model(name: str, image_shape, num_classes: int, penultimate_dim: int | None = None,
                        **options) -> Classifier:
    """The library's network without its classifier, with gdsoftmax's :class:`Classifier` head."""
    problem = library_model_problem(name, options)
    if problem:
        raise ValueError(f"model.name {name}: {problem}")
    library, _, model = name.partition(":")
    stem = options.pop("stem", "imagenet")
    if library == "timm":
        body = importlib.import_module("timm").create_model(model, num_classes=0, in_chans=image_shape[0], **options)
        feature_dim = body.num_features
    else:
        body, feature_dim = _headless_torchvision(model, image_shape[0], num_classes, options)
    if stem == "cifar":
        _cifar_stem(body, name)
    return Classifier(body, feature_dim, num_classes, penultimate_dim)
