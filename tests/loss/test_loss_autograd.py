"""gradcheck and gradgradcheck in float64 over 3 beta x 3 tau x 4 target modes (36 configurations)."""

from __future__ import annotations

import pytest
import torch
from torch.autograd import gradcheck, gradgradcheck

# every test calling loss_fn runs on each kernel: C++ operator, fused kernel, composite (conftest.py)

MODES = ["index-weight-ignore", "index-smoothing", "probability", "spatial-probability-smoothing"]


def case(mode, seed):
    gen = torch.Generator().manual_seed(seed)
    if mode.startswith("spatial"):
        logits = torch.randn(2, 4, 3, dtype=torch.float64, generator=gen)
    else:
        logits = torch.randn(5, 4, dtype=torch.float64, generator=gen) * 2
    kwargs = {}
    if "probability" in mode:
        target = torch.softmax(torch.randn(logits.shape, dtype=torch.float64, generator=gen), 1)
        target.requires_grad_(True)  # F.cross_entropy is differentiable in soft targets too
    else:
        target = torch.randint(4, (5,), generator=gen)
    if "weight" in mode:
        kwargs["weight"] = torch.rand(4, dtype=torch.float64, generator=gen) + 0.5
        target[1] = -100
    if "smoothing" in mode:
        kwargs["label_smoothing"] = 0.15
    return logits.requires_grad_(True), target, kwargs


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("tau", [0.5, 1.0, 3.0])
@pytest.mark.parametrize("beta", [0.01, 1.0, 20.0])
def test_gradcheck_and_gradgradcheck(loss_fn, beta, tau, mode):
    logits, target, kwargs = case(mode, seed=int(beta * 100 + tau * 10))
    inputs = (logits, target) if target.requires_grad else (logits,)

    def fn(*args):
        t = args[1] if len(args) > 1 else target
        return loss_fn(args[0], t, beta, tau=tau, reduction="none", **kwargs)

    assert gradcheck(fn, inputs)
    assert gradgradcheck(fn, inputs)
