"""A model of your own, as gdsoftmax takes it: a function of the class count and the image shape that returns an
nn.Module mapping images to logits. This one, a small ConvMixer-style network (a 2x2 patch stem, depthwise and
pointwise convolutions with residuals, global pooling), is in no model library; configs/own_model/ names it as
model.name = "configs.own_model.own_cnn:build" (the commands run from the repository's root)."""

from torch import nn


class Residual(nn.Module):
    def __init__(self, body: nn.Module):
        super().__init__()
        self.body = body

    def forward(self, x):
        return x + self.body(x)


def build(num_classes: int, image_shape: tuple[int, int, int], width: int = 64, depth: int = 4, kernel: int = 5):
    """Patch stem (stride 2), ``depth`` blocks of a depthwise (``kernel``) and a pointwise convolution, each with
    GELU and batch norm, then global average pooling and the class layer."""
    blocks = [nn.Sequential(
        Residual(nn.Sequential(nn.Conv2d(width, width, kernel, groups=width, padding=kernel // 2), nn.GELU(),
                               nn.BatchNorm2d(width))),
        nn.Conv2d(width, width, 1), nn.GELU(), nn.BatchNorm2d(width)) for _ in range(depth)]
    return nn.Sequential(
        nn.Conv2d(image_shape[0], width, 2, stride=2), nn.GELU(), nn.BatchNorm2d(width), *blocks,
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(width, num_classes))
