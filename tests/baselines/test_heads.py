"""Margin heads against per-sample float64 references, and tiny training runs that learn."""

from __future__ import annotations

import copy
import math

import pytest
import torch

from gdsoftmax.baselines.heads import HEADS, ArcFaceHead, CenterLossHead, CosFaceHead, LSoftmaxHead, SphereFaceHead, psi


def setup(head_cls, seed=0, **options):
    torch.manual_seed(seed)
    head = head_cls(6, 4, **options).double()
    features = torch.randn(9, 6, dtype=torch.float64)
    target = torch.randint(4, (9,))
    return head, features, target


def ce_of(row_logits, y):
    return math.log(sum(math.exp(v) for v in row_logits)) - row_logits[y]


def cos_between(x, w):
    x, w = x.detach(), w.detach()
    return float(x @ w / (x.norm() * w.norm()))


def test_cosface_reference():
    head, x, y = setup(CosFaceHead, s=8.0, m=0.2)
    losses = []
    for xi, yi in zip(x, y, strict=True):
        row = [8.0 * (cos_between(xi, w) - (0.2 if j == yi else 0.0)) for j, w in enumerate(head.weight)]
        losses.append(ce_of(row, yi))
    assert head.loss(x, y).item() == pytest.approx(sum(losses) / len(losses), rel=1e-10)
    assert head(x)[0, 1].item() == pytest.approx(8.0 * cos_between(x[0], head.weight[1]), rel=1e-10)


def test_arcface_reference():
    head, x, y = setup(ArcFaceHead, s=8.0, m=0.5)
    losses = []
    for xi, yi in zip(x, y, strict=True):
        row = []
        for j, w in enumerate(head.weight):
            c = cos_between(xi, w)
            if j == yi:
                theta = math.acos(c)
                c = math.cos(theta + 0.5) if theta + 0.5 <= math.pi else c - 0.5 * math.sin(0.5)
            row.append(8.0 * c)
        losses.append(ce_of(row, yi))
    assert head.loss(x, y).item() == pytest.approx(sum(losses) / len(losses), rel=1e-6)


def reference_psi(c, m):
    theta = math.acos(c)
    k = math.floor(m * theta / math.pi)
    return (-1) ** k * math.cos(m * theta) - 2 * k


@pytest.mark.parametrize("head_cls", [SphereFaceHead, LSoftmaxHead])
@pytest.mark.parametrize("step", [0, 100, 10**6])
def test_angular_margin_reference(head_cls, step):
    head, x, y = setup(head_cls, m=3)
    head.step = step
    lam = max(5.0, 1000.0 * (1 + 0.12 * step) ** -1.0)
    losses = []
    for xi, yi in zip(x, y, strict=True):
        row = []
        for j, w in enumerate(head.weight):
            w_norm = 1.0 if head_cls is SphereFaceHead else float(w.detach().norm())
            c = cos_between(xi, w)
            value = float(xi.norm()) * w_norm * c
            if j == yi:
                value = float(xi.norm()) * w_norm * (lam * c + reference_psi(c, 3)) / (1 + lam)
            row.append(value)
        losses.append(ce_of(row, yi))
    assert head.loss(x, y).item() == pytest.approx(sum(losses) / len(losses), rel=1e-6)


def test_functional_forms_match_the_heads():
    from gdsoftmax.baselines.heads import angular_margin_loss, arcface_loss, center_loss, cosface_loss

    head, x, y = setup(CosFaceHead, s=8.0, m=0.2)
    torch.testing.assert_close(cosface_loss(x, head.weight, y, 8.0, 0.2), head.loss(x, y))
    head, x, y = setup(ArcFaceHead, s=8.0, m=0.5)
    torch.testing.assert_close(arcface_loss(x, head.weight, y, 8.0, 0.5), head.loss(x, y))
    head, x, y = setup(SphereFaceHead, m=3)
    torch.testing.assert_close(angular_margin_loss(x, head.weight, y, 3, head.lambda_at(0)), head.loss(x, y))
    centers = torch.randn(4, 6, dtype=torch.float64)
    y_ignored = y.clone()
    y_ignored[0] = -100
    expected = 0.5 * (x[1:] - centers[y[1:]]).square().sum(1).mean()
    torch.testing.assert_close(center_loss(x, centers, y_ignored), expected)


def test_psi_is_monotone_and_matches_cos_m_theta_near_zero():
    theta = torch.linspace(0, math.pi, 1001, dtype=torch.float64)
    values = psi(torch.cos(theta), 4)
    assert bool((values[1:] <= values[:-1] + 1e-9).all())
    assert values[0].item() == pytest.approx(1.0, abs=1e-5)  # acos is clamped at 1 - 1e-7 for a finite gradient


def test_center_loss_reference_and_update():
    head, x, y = setup(CenterLossHead, lam=0.1, alpha=0.5)
    head.centers.copy_(torch.randn_like(head.centers))
    centers = head.centers.clone()
    ce = torch.nn.functional.cross_entropy(head(x), y)
    pull = 0.5 * sum(float((xi - centers[yi]).square().sum()) for xi, yi in zip(x, y, strict=True)) / len(y)
    assert head.loss(x, y).item() == pytest.approx(ce.item() + 0.1 * pull, rel=1e-10)
    for j in range(4):  # Wen et al.: c_j -= alpha * sum_i (c_j - x_i) / (1 + n_j)
        members = x[y == j]
        expected = centers[j] - 0.5 * (len(members) * centers[j] - members.sum(0)) / (1 + len(members))
        torch.testing.assert_close(head.centers[j], expected)


@pytest.mark.parametrize("name", sorted(HEADS))
def test_each_head_trains(name):
    torch.manual_seed(0)
    x = torch.randn(300, 5)
    y = (x[:, :3].argmax(1))  # three classes, linearly separable by direction
    body = torch.nn.Linear(5, 8)
    options = {"cosface": {"s": 10.0}, "arcface": {"s": 10.0, "m": 0.2}}.get(name, {})
    head = HEADS[name](8, 3, **options)
    optimizer = torch.optim.SGD([*body.parameters(), *head.parameters()], lr=0.1, momentum=0.9)
    for step in range(300):
        head.step = step
        optimizer.zero_grad()
        head.loss(body(x), y).backward()
        optimizer.step()
    head.eval()
    assert (head(body(x)).argmax(1) == y).float().mean() > 0.9


def _options(name):
    return {"sphereface": {"m": 4}, "lsoftmax": {"m": 2}}.get(name, {})


@pytest.mark.parametrize("name", sorted(HEADS))
def test_every_head_exposes_its_plain_logits(name):
    torch.manual_seed(0)
    head = HEADS[name](6, 4, **_options(name))
    features = torch.randn(5, 6)
    torch.testing.assert_close(head.get_logits(features), head(features))
    assert head.get_logits(features).shape == (5, 4)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
@pytest.mark.parametrize("name", sorted(HEADS))
def test_heads_stay_finite_at_the_arccos_boundary_in_half_precision(name, dtype):
    """Features exactly along (cos = 1) and against (cos = -1) their class weight, in half precision
    and under autocast: the loss and every gradient finite (1 - 1e-7 rounds to 1 in fp16/bf16)."""
    torch.manual_seed(0)
    head = HEADS[name](6, 4, **_options(name))
    with torch.no_grad():
        weight = head.linear.weight if name == "center" else head.weight
        features = torch.cat([3 * weight[:2], -3 * weight[2:]]).clone()  # (4, 6): along / against
    target = torch.tensor([0, 1, 2, 3])
    for autocast in (False, True):  # a half-precision head, or a float32 head under autocast
        model = head if autocast else copy.deepcopy(head).to(dtype)
        model.zero_grad()
        x = features.to(torch.float32 if autocast else dtype).requires_grad_()
        with torch.autocast("cpu", dtype=dtype, enabled=autocast):
            loss = model.loss(x, target)
            logits = model.get_logits(x.detach())
        loss.backward()
        assert torch.isfinite(loss), (name, dtype, autocast)
        assert torch.isfinite(x.grad).all()
        assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)
        assert torch.isfinite(logits).all()
