"""The fused beta-loss: values and gradients against the float64 reference, memory-relevant paths."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from gdsoftmax import gradient_decay_loss
from gdsoftmax.loss.fused import fused_gradient_decay_loss
from reference import reference_loss


@pytest.mark.parametrize("beta", [1e-6, 0.01, 1.0, 50.0, 1e6])
@pytest.mark.parametrize("tau", [0.5, 2.0])
@pytest.mark.parametrize("scale", [1.0, 1e4])
@pytest.mark.parametrize("reduction", ["mean", "sum"])
@pytest.mark.parametrize("weighted", [False, True])
def test_matches_float64_reference(beta, tau, scale, reduction, weighted):
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(37, 11, generator=g) * scale
    target = torch.randint(11, (37,), generator=g)
    target[::5] = -100
    weight = torch.rand(11, generator=g) + 0.5 if weighted else None
    x = logits.clone().requires_grad_(True)
    loss = fused_gradient_decay_loss(x, target, beta, tau=tau, weight=weight, reduction=reduction)
    loss.backward()
    ref, ref_grad = reference_loss(logits, target, beta, tau=tau, weight=weight, reduction=reduction)
    wmax = 1.0 if weight is None else weight.max().item()
    per_sample = 4 * (1e-6 + 1.2e-7 * logits.abs().max().item() / tau) * wmax
    atol = per_sample * (37 if reduction == "sum" else 1)
    torch.testing.assert_close(loss.double(), ref, rtol=0, atol=atol)
    torch.testing.assert_close(x.grad.double(), ref_grad, rtol=0, atol=4e-7 * wmax / tau)


def test_equals_the_composite_and_cross_entropy():
    logits, target = torch.randn(300, 20, dtype=torch.float64), torch.randint(20, (300,))
    a, b = logits.clone().requires_grad_(True), logits.clone().requires_grad_(True)
    fused_gradient_decay_loss(a, target, 0.3).backward()
    gradient_decay_loss(b, target, 0.3).backward()
    torch.testing.assert_close(a.grad, b.grad)
    c = logits.clone().requires_grad_(True)
    fused_gradient_decay_loss(c, target, 1.0).backward()
    d = logits.clone().requires_grad_(True)
    F.cross_entropy(d, target).backward()
    torch.testing.assert_close(c.grad, d.grad)


def test_chunks_cover_every_row(monkeypatch):
    import gdsoftmax.loss.fused as fused

    monkeypatch.setattr(fused, "CHUNK_BYTES", 3 * 7 * 4)  # 3 rows per chunk, 10 rows
    logits, target = torch.randn(10, 7, requires_grad=True), torch.randint(7, (10,))
    fused.fused_gradient_decay_loss(logits, target, 0.2, reduction="sum").backward()
    expected = logits.detach().clone().requires_grad_(True)
    gradient_decay_loss(expected, target, 0.2, reduction="sum").backward()
    torch.testing.assert_close(logits.grad, expected.grad)


def test_scaled_upstream_gradient_and_gradgradcheck():
    logits = torch.randn(8, 4, dtype=torch.float64, requires_grad=True)
    target = torch.randint(4, (8,))
    (3.0 * fused_gradient_decay_loss(logits, target, 0.5)).backward()
    expected = logits.detach().clone().requires_grad_(True)
    (3.0 * gradient_decay_loss(expected, target, 0.5)).backward()
    torch.testing.assert_close(logits.grad, expected.grad)
    x = torch.randn(6, 4, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradgradcheck(lambda z: fused_gradient_decay_loss(z, target[:6], 0.5), (x,))


def test_inplace_overwrites_the_logits_with_their_gradient():
    torch.manual_seed(0)
    layer = torch.nn.Linear(5, 7)
    x, target = torch.randn(16, 5), torch.randint(7, (16,))
    fused_gradient_decay_loss(layer(x), target, 0.1, inplace=True).backward()
    fused_weight_grad = layer.weight.grad.clone()
    layer.zero_grad()
    gradient_decay_loss(layer(x), target, 0.1).backward()
    torch.testing.assert_close(fused_weight_grad, layer.weight.grad)


def test_all_ignored_and_bad_input():
    x = torch.randn(3, 4, requires_grad=True)
    loss = fused_gradient_decay_loss(x, torch.full((3,), -100))
    loss.backward()
    assert torch.isnan(loss)
    assert torch.equal(x.grad, torch.zeros_like(x))
    with pytest.raises(ValueError, match="reduction='mean' or 'sum'"):
        fused_gradient_decay_loss(x, torch.zeros(3, dtype=torch.long), reduction="none")
    with pytest.raises(IndexError, match="out of bounds"):
        fused_gradient_decay_loss(x, torch.full((3,), 9))


def test_auto_picks_the_fused_kernel_where_it_applies_and_the_composite_elsewhere(monkeypatch):
    monkeypatch.setenv("GDSOFTMAX_NATIVE", "0")  # keep "auto" off the C++ operator (tests/loss/test_native.py)
    logits, target = torch.randn(5, 4), torch.randint(4, (5,))
    fused_fn = "_FusedTargetLossBackward"
    x = logits.clone().requires_grad_()
    assert gradient_decay_loss(x, target, 0.2).grad_fn.name() == fused_fn
    assert gradient_decay_loss(x, target, 0.2, reduction="sum").grad_fn.name() == fused_fn
    assert gradient_decay_loss(x, target, 0.2, backend="composite").grad_fn.name() != fused_fn
    assert "Fused" not in gradient_decay_loss(x, target, 0.2, reduction="none").grad_fn.name()
    assert "Fused" not in gradient_decay_loss(x, target, 0.2, label_smoothing=0.1).grad_fn.name()
    assert "Fused" not in gradient_decay_loss(x.half(), target, 0.2).grad_fn.name()  # float32 composite
    spatial = torch.randn(2, 4, 3, requires_grad=True)
    assert "Fused" not in gradient_decay_loss(spatial, torch.randint(4, (2, 3)), 0.2).grad_fn.name()


@pytest.mark.parametrize(("call", "reason"), [
    (lambda: gradient_decay_loss(torch.randn(5, 4), torch.randint(4, (5,)), reduction="none", backend="fused"),
     "reduces inside the kernel"),
    (lambda: gradient_decay_loss(torch.randn(5, 4), torch.randint(4, (5,)), label_smoothing=0.1, backend="fused"),
     "no label smoothing"),
    (lambda: gradient_decay_loss(torch.randn(5, 4).half(), torch.randint(4, (5,)), backend="fused"),
     "float32 or float64"),
    (lambda: gradient_decay_loss(torch.randn(5, 4, 2), torch.randint(4, (5, 2)), backend="fused"),
     "class-index targets"),
    (lambda: gradient_decay_loss(torch.randn(5, 4), torch.softmax(torch.randn(5, 4), 1), backend="fused"),
     "class-index targets"),
    (lambda: gradient_decay_loss(torch.randn(5, 4), torch.randint(4, (5,)), backend="cuda"), "must be one of"),
])
def test_a_named_backend_that_cannot_compute_the_call_says_why(call, reason):
    with pytest.raises(ValueError, match=reason):
        call()


def test_module_and_supported_backends_name_the_same_kernels():
    from gdsoftmax import GradientDecayLoss, supported_backends

    logits, target = torch.randn(5, 4), torch.randint(4, (5,))
    assert supported_backends(logits, target)[-2:] == ("fused", "composite")
    # the Triton kernel covers every reduction (on CPU tensors only in Triton's interpreter)
    assert [b for b in supported_backends(logits, target, reduction="none") if b != "triton"] == ["composite"]
    criterion = GradientDecayLoss(0.3, backend="composite")
    torch.testing.assert_close(criterion(logits, target), gradient_decay_loss(logits, target, 0.3, backend="fused"))
    assert "backend='composite'" in repr(criterion)
    with pytest.raises(ValueError, match="must be one of"):
        GradientDecayLoss(backend="cuda")


def test_vmap_and_functional_grad_still_work():
    from torch.func import grad, vmap

    logits, target = torch.randn(3, 6, 4), torch.randint(4, (3, 6))
    per_batch = vmap(lambda z, t: gradient_decay_loss(z, t, 0.2))(logits, target)
    expected = torch.stack([gradient_decay_loss(z, t, 0.2) for z, t in zip(logits, target, strict=True)])
    torch.testing.assert_close(per_batch, expected)
    g = grad(lambda z: gradient_decay_loss(z, target[0], 0.2))(logits[0])
    x = logits[0].clone().requires_grad_(True)
    gradient_decay_loss(x, target[0], 0.2).backward()
    torch.testing.assert_close(g, x.grad)


@pytest.mark.parametrize("chunk_rows", [1, 7, 64])
@pytest.mark.parametrize("with_bias", [False, True])
@pytest.mark.parametrize("reduction", ["mean", "sum"])
@pytest.mark.parametrize("beta", [0.01, 1.0, 20.0])
def test_fused_linear_matches_matmul_then_loss(chunk_rows, with_bias, reduction, beta):
    from gdsoftmax.loss.fused import fused_linear_gradient_decay_loss

    g = torch.Generator().manual_seed(3)
    hidden = torch.randn(23, 5, generator=g, dtype=torch.float64)
    weight = torch.randn(9, 5, generator=g, dtype=torch.float64)
    bias = torch.randn(9, generator=g, dtype=torch.float64) if with_bias else None
    target = torch.randint(9, (23,), generator=g)
    target[::4] = -100
    inputs = [t.clone().requires_grad_(True) for t in (hidden, weight) + ((bias,) if with_bias else ())]
    loss = fused_linear_gradient_decay_loss(inputs[0], inputs[1], target, beta, bias=inputs[2] if with_bias else None,
                                            tau=0.7, reduction=reduction, chunk_rows=chunk_rows)
    (2.5 * loss).backward()  # an upstream gradient other than 1
    expected = [t.clone().requires_grad_(True) for t in (hidden, weight) + ((bias,) if with_bias else ())]
    logits = expected[0] @ expected[1].T + (expected[2] if with_bias else 0)
    reference = gradient_decay_loss(logits, target, beta, tau=0.7, reduction=reduction)
    (2.5 * reference).backward()
    torch.testing.assert_close(loss, reference)
    for ours, theirs in zip(inputs, expected, strict=True):
        torch.testing.assert_close(ours.grad, theirs.grad)


def test_fused_linear_edge_cases():
    from gdsoftmax.loss.fused import fused_linear_gradient_decay_loss

    h, w = torch.randn(4, 3, requires_grad=True), torch.randn(5, 3, requires_grad=True)
    loss = fused_linear_gradient_decay_loss(h, w, torch.full((4,), -100))
    loss.backward()
    assert torch.isnan(loss)
    assert torch.equal(h.grad, torch.zeros_like(h))
    with pytest.raises(ValueError, match=r"hidden \(N, H\) and weight \(V, H\)"):
        fused_linear_gradient_decay_loss(h, torch.randn(5, 4), torch.zeros(4, dtype=torch.long))
    with pytest.raises(IndexError, match="out of bounds"):
        fused_linear_gradient_decay_loss(h, w, torch.full((4,), 7))
    x = torch.randn(4, 3, dtype=torch.float64, requires_grad=True)
    loss = fused_linear_gradient_decay_loss(x, w.double().detach(), torch.zeros(4, dtype=torch.long))
    with pytest.raises(RuntimeError, match="no double backward"):
        torch.autograd.grad(loss, x, create_graph=True)
