"""The nn.Module wrapper, the package surface and the demo command."""

from __future__ import annotations

import subprocess
import sys

import torch

import gdsoftmax
from gdsoftmax import GradientDecayLoss, gradient_decay_loss


def test_weight_is_a_buffer_that_follows_state_dict():
    criterion = GradientDecayLoss(0.1, weight=torch.tensor([1.0, 2.0, 3.0]))
    assert "weight" in dict(criterion.named_buffers())
    restored = GradientDecayLoss(0.1, weight=torch.zeros(3))
    restored.load_state_dict(criterion.state_dict())
    assert torch.equal(restored.weight, criterion.weight)


def test_beta_can_change_between_steps():
    logits, target = torch.randn(4, 3), torch.tensor([0, 1, 2, 0])
    criterion = GradientDecayLoss(0.1)
    first = criterion(logits, target)
    criterion.beta = 10.0
    torch.testing.assert_close(criterion(logits, target), gradient_decay_loss(logits, target, 10.0))
    assert criterion(logits, target) > first
    assert "beta=10" in repr(criterion)


def test_training_step_learns():
    torch.manual_seed(0)
    x = torch.randn(64, 5)
    y = (x[:, 0] > 0).long()
    model = torch.nn.Linear(5, 2)
    criterion = GradientDecayLoss(0.1)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.5)
    for _ in range(50):
        optimizer.zero_grad()
        criterion(model(x), y).backward()
        optimizer.step()
    assert (model(x).argmax(1) == y).float().mean() > 0.95


def test_import_stays_light():
    code = "import sys, gdsoftmax; print('matplotlib' in sys.modules, 'sklearn' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.split() == ["False", "False"]
    assert gdsoftmax.__all__ == ["BACKENDS", "GradientDecayLoss", "gradient_decay_loss", "schedules",
                                 "supported_backends", "theory"]
