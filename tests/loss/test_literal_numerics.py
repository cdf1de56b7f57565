"""The paper's Eq. 25 computed literally (loss.numerics = "paper-u70"): where it equals the stable
loss, where float32 makes it differ, and how a config and stacked training use it."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from gdsoftmax.engine.config.schema import ConfigError, parse_config
from gdsoftmax.engine.loop.trainer import run_experiment, train
from gdsoftmax.loss.literal import PAPER_SHIFT, shifted_exp_loss
from reference import reference_loss

FLOAT32_TINY = float(np.finfo(np.float32).smallest_normal)  # 2**-126 = e^{-87.3}
FLOAT32_SMALLEST = float(np.finfo(np.float32).smallest_subnormal)  # 2**-149 = e^{-103.3}


@pytest.mark.parametrize("beta", [1e-3, 0.1, 1.0, 5.0])
@pytest.mark.parametrize("tau", [1.0, 0.5])
def test_for_moderate_logits_it_is_the_beta_loss_value_and_gradient(beta, tau):
    generator = torch.Generator().manual_seed(7)
    logits = (3 * torch.randn(16, 10, generator=generator)).requires_grad_()
    target = torch.randint(10, (16,), generator=generator)
    loss = shifted_exp_loss(logits, target, beta, tau)
    loss.backward()
    expected, grad = reference_loss(logits.detach().double(), target, beta, tau=tau, reduction="mean")
    assert loss.dtype == torch.float32
    assert loss.item() == pytest.approx(expected.item(), rel=1e-5, abs=1e-6)
    torch.testing.assert_close(logits.grad.double(), grad, rtol=1e-4, atol=1e-7)


def test_the_thresholds_follow_from_float32_and_the_shift():
    # the documented thresholds, derived from float32's limits, not from the code
    assert math.log(FLOAT32_TINY) + PAPER_SHIFT == pytest.approx(-17.3, abs=0.05)
    assert math.log(FLOAT32_SMALLEST) + PAPER_SHIFT == pytest.approx(-33.3, abs=0.05)
    target = torch.tensor([0])
    # a true logit far below the shift: its term is 0 in float32, so the loss is infinite
    assert math.isinf(shifted_exp_loss(torch.tensor([[-40.0, 0.0]]), target, 1.0).item())
    # an other-class logit there drops out of the sum: the loss is exactly that of the class left out
    dropped = shifted_exp_loss(torch.tensor([[0.0, -40.0, 1.0]]), target, 0.5)
    kept = reference_loss(torch.tensor([[0.0, 1.0]], dtype=torch.float64), target, 0.5)[0]
    assert dropped.item() == pytest.approx(kept.item(), rel=1e-6)
    # in the subnormal range the value loses precision that the stable form keeps
    z = torch.tensor([[-25.0, -25.0 + 1e-3]])
    exact = reference_loss(z.double(), target, 1.0)[0].item()
    assert abs(shifted_exp_loss(z, target, 1.0).item() - exact) > 1e-6
    assert shifted_exp_loss(z + 60, target, 1.0).item() == pytest.approx(exact, abs=1e-6)


def test_one_beta_per_stacked_run_broadcasts_over_the_batch():
    generator = torch.Generator().manual_seed(3)
    logits, target = torch.randn(3, 8, 5, generator=generator), torch.randint(5, (3, 8), generator=generator)
    beta = torch.tensor([1e-3, 1.0, 4.0])
    stacked = shifted_exp_loss(logits, target, beta)
    assert stacked.shape == (3,)
    for m in range(3):
        assert stacked[m].item() == pytest.approx(shifted_exp_loss(logits[m], target[m], float(beta[m])).item())


def test_config_accepts_only_the_plain_beta_loss_with_literal_numerics():
    assert parse_config({"loss": {"numerics": "paper-u70"}}).loss.numerics == "paper-u70"
    with pytest.raises(ConfigError, match=r"loss.numerics must be one of \('stable', 'paper-u70'\), got 'u70'"):
        parse_config({"loss": {"numerics": "u70"}})
    with pytest.raises(ConfigError, match=r"loss\.numerics .paper-u70. needs the plain gdsoftmax loss"):
        parse_config({"loss": {"numerics": "paper-u70", "label_smoothing": 0.1}})


def small(name: str, beta: float, seed: int = 0, **loss) -> object:
    return parse_config({"name": name, "seed": seed, "loss": {"beta": beta, **loss},
                         "train": {"epochs": 2, "lr": 0.05, "batch_size": 64, "record_epochs": [1]}})


def test_literal_numerics_train_alike_stacked_and_alone_and_near_the_stable_loss(tmp_path):
    configs = [small(f"u70_{b}", b, numerics="paper-u70") for b in (0.01, 1.0)]
    alone = [run_experiment(c, tmp_path / "alone" / c.name, progress=False) for c in configs]
    stacked = train(configs, [tmp_path / "stacked" / c.name for c in configs], progress=False)
    stable = run_experiment(small("stable", 0.01), tmp_path / "stable", progress=False)
    for a, s in zip(alone, stacked, strict=True):
        assert s["stacked_runs"] == 2
        assert a["train_ce"] == pytest.approx(s["train_ce"], rel=1e-4)
    # digits logits stay far from the shift's limits: the literal form trains like the stable one
    assert alone[0]["train_ce"] == pytest.approx(stable["train_ce"], rel=1e-3)
