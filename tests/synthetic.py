"""Small image data sets the engine tests train on in seconds."""

from __future__ import annotations

import torch

from gdsoftmax.engine.data.images import Dataset, Split


def synthetic_images(n: int = 320, classes: int = 4, shape=(3, 16, 16), seed: int = 0) -> Dataset:
    """Images whose class sets a base pattern, plus noise: learnable in a few epochs."""
    g = torch.Generator().manual_seed(seed)
    labels = torch.arange(n) % classes
    base = torch.randint(0, 256, (classes, *shape), generator=g)
    images = (base[labels] + torch.randint(-30, 31, (n, *shape), generator=g)).clamp(0, 255).to(torch.uint8)
    pixels = images.double() / 255
    mean, std = pixels.mean((0, 2, 3)).float(), pixels.std((0, 2, 3)).float()
    split = [slice(0, 256), slice(256, 288), slice(288, 320)]
    return Dataset("synthetic", *(Split(images[s], labels[s]) for s in split), classes, mean, std, 255.0)
