"""Models from timm and torchvision by name: ``model.name = "timm:resnet18"`` or ``"torchvision:resnet18"``.

The library builds the network with the data's class count (timm: without its classifier,
``num_classes=0``, and with ``in_chans`` set from the data; torchvision: its last linear layer is
taken off); gdsoftmax puts its own :class:`~gdsoftmax.engine.models.registry.Classifier` head on the
pooled features, so ``model(x, return_features=True)``, ``model.penultimate_dim`` and every report
work as for the built-in models. ``model.options`` go to the library's constructor, except
``stem``.

**First contact.** The pooled width is measured by one forward pass on the data's image shape (timm
models with a pre-logits head pool to ``head_hidden_size``, not ``num_features``); a model that
cannot take images that small is refused in one line naming the smallest size it takes; a model
whose training forward returns a tuple (torchvision's GoogLeNet and Inception with their auxiliary
heads) is read by its main output; and 1-channel images are given to a torchvision model (which
takes 3 channels) as three copies of the channel.

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

import torch
from torch import nn

from gdsoftmax.engine.models.classifier import Classifier

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


def _headless_torchvision(name: str, channels: int, num_classes: int, options: dict) -> nn.Module:
    body = importlib.import_module("torchvision.models").get_model(name, num_classes=num_classes, **options)
    last = [(path, m) for path, m in body.named_modules() if isinstance(m, nn.Linear) and m.out_features == num_classes]
    if not last:
        raise ValueError(f"torchvision:{name} has no final linear layer to put gdsoftmax's classifier in place of")
    path, _ = last[-1]
    parent = body.get_submodule(path.rpartition(".")[0]) if "." in path else body
    setattr(parent, path.rpartition(".")[2], nn.Identity())
    if channels == 1:  # grey images as three equal channels: the network keeps its pretrained-style stem
        body.register_forward_pre_hook(lambda module, args: (args[0].expand(-1, 3, -1, -1), *args[1:]))
    elif channels != 3:
        raise ValueError(f"torchvision:{name} takes 3-channel (or 1-channel) images; the data has {channels}: use a "
                         "timm model (it sets in_chans) or a built-in one")
    return body


def _main_output(module, args, output):
    """A training forward that returns (logits, aux...) (GoogLeNet, Inception): the main output alone."""
    return output[0] if isinstance(output, tuple | list) else output


def _constructed(name: str, build):
    try:
        return build()
    except TypeError as error:  # an option the constructor does not take, or one of the wrong type
        raise ValueError(f"model.options: {name} refuses them ({str(error).splitlines()[0][:160]}); leave out or "
                         "correct the option it names") from error


@torch.no_grad()
def _pooled_width(body: nn.Module, name: str, image_shape) -> int:
    """The width of ``body``'s pooled features on one image of ``image_shape``, measured; a model that
    cannot take that size is refused naming the smallest square size (up to 512) it takes."""
    was_training = body.training
    body.eval()
    try:
        features = _probe(body, image_shape)
        if features is None:
            fits = next((size for size in (16, 32, 64, 128, 224, 299, 512) if size > min(image_shape[1:])
                         and _probe(body, (image_shape[0], size, size)) is not None), None)
            needs = f"at least {fits}x{fits}" if fits else "larger images than 512x512"
            raise ValueError(f"model.name {name} cannot take {image_shape[1]}x{image_shape[2]} images: it needs "
                             f"{needs}; choose a smaller model (docs/engine.md lists some that take 32x32) or "
                             "larger images")
    finally:
        body.train(was_training)
    if features.dim() != 2:
        raise ValueError(f"model.name {name}: its features are not pooled to one vector per image (shape "
                         f"{tuple(features.shape)}); choose a model with global pooling")
    return int(features.shape[1])


def _probe(body: nn.Module, image_shape):
    try:
        return body(torch.zeros(1, *image_shape))
    except (RuntimeError, ValueError, IndexError, AssertionError):  # too small: a kernel larger than its input
        return None


def build_library_model(name: str, image_shape, num_classes: int, penultimate_dim: int | None = None,
                        **options) -> Classifier:
    """The library's network without its classifier, with gdsoftmax's :class:`Classifier` head."""
    problem = library_model_problem(name, options)
    if problem:
        raise ValueError(f"model.name {name}: {problem}")
    library, _, model = name.partition(":")
    stem = options.pop("stem", "imagenet")
    if library == "timm":
        timm = importlib.import_module("timm")
        body = _constructed(name, lambda: timm.create_model(model, num_classes=0, in_chans=image_shape[0], **options))
    else:
        body = _constructed(name, lambda: _headless_torchvision(model, image_shape[0], num_classes, options))
    body.register_forward_hook(_main_output)
    if stem == "cifar":
        _cifar_stem(body, name)
    return Classifier(body, _pooled_width(body, name, tuple(image_shape)), num_classes, penultimate_dim)
