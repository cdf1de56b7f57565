"""The Triton β-loss kernel, run by Triton's interpreter on CPU tensors (TRITON_INTERPRET=1), against
the float64 reference written from the formula: values and gradients, every reduction, class
weights, label smoothing, ignore_index, temperatures, half precision, sizes across block edges."""

import os

import pytest
import torch

from gdsoftmax import GradientDecayLoss, gradient_decay_loss
from gdsoftmax.loss import triton_beta
from reference import reference_loss

pytestmark = pytest.mark.skipif(not triton_beta.available(), reason="needs triton")
DEVICE = "cuda" if torch.cuda.is_available() else "cpu"


def _case(n=5, c=13, seed=0, ignored=(2,)):
    torch.manual_seed(seed)
    logits = 3 * torch.randn(n, c, dtype=torch.float64)
    logits[0, 4] = 40.0  # a confident row: p_c ~ 1, where a careless kernel cancels
    target = torch.randint(c, (n,))
    target[0] = 4
    for i in ignored:
        target[i] = -100
    return logits, target, torch.rand(c, dtype=torch.float64) + 0.5


def _triton(logits, target, dtype=torch.float32, **options):
    x = logits.to(DEVICE, dtype).requires_grad_()
    loss = gradient_decay_loss(x, target.to(DEVICE), backend="triton", **options)
    upstream = torch.linspace(0.5, 1.5, loss.numel(), device=DEVICE).reshape(loss.shape).to(loss.dtype)
    (grad,) = torch.autograd.grad(loss, x, upstream)
    return loss.double().cpu(), grad.double().cpu(), upstream.double().cpu()


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize("weighted", [False, True])
@pytest.mark.parametrize("label_smoothing", [0.0, 0.2])
@pytest.mark.parametrize("beta", [0.01, 1.0, 20.0])
def test_values_and_gradients_against_the_float64_reference(reduction, weighted, label_smoothing, beta):
    logits, target, weight = _case()
    options = {"beta": beta, "tau": 0.7, "reduction": reduction, "label_smoothing": label_smoothing,
               "weight": weight if weighted else None}
    loss, grad, upstream = _triton(logits, target, **{**options, "weight": None if not weighted
                                                       else weight.float().to(DEVICE)})
    expected, _ = reference_loss(logits, target, **options)
    # the gradient of sum(upstream * loss): per-row upstream for "none", a scalar otherwise
    x = logits.clone().requires_grad_()
    ref = gradient_decay_loss(x, target, backend="composite", **options)
    (expected_grad,) = torch.autograd.grad(ref, x, upstream)
    torch.testing.assert_close(loss, expected, rtol=2e-6, atol=2e-6)
    torch.testing.assert_close(grad, expected_grad, rtol=2e-5, atol=2e-6)


def test_the_reference_gradient_itself():  # the composite above is checked against the formula here
    logits, target, weight = _case()
    _, grad, _ = _triton(logits, target, beta=0.1, tau=0.7, weight=weight.float().to(DEVICE), reduction="sum",
                         label_smoothing=0.2)
    x = logits.clone()
    _, expected = reference_loss(x, target, 0.1, tau=0.7, weight=weight, reduction="sum", label_smoothing=0.2)
    upstream = torch.linspace(0.5, 1.5, 1, dtype=torch.float64)
    torch.testing.assert_close(grad, expected * upstream, rtol=2e-5, atol=2e-6)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_half_precision_logits_are_computed_in_float32(dtype):
    logits, target, _ = _case()
    logits = logits.to(dtype).double()  # the values the kernel reads
    loss, grad, upstream = _triton(logits, target, dtype, beta=0.1, reduction="sum", label_smoothing=0.1)
    expected, expected_grad = reference_loss(logits, target, 0.1, reduction="sum", label_smoothing=0.1)
    eps = torch.finfo(dtype).eps
    torch.testing.assert_close(loss, expected, rtol=eps, atol=0.0)  # one rounding to the output dtype
    torch.testing.assert_close(grad, expected_grad * upstream, rtol=eps, atol=eps * 1e-2)


@pytest.mark.parametrize(("n", "c"), [(1, 1), (3, 2), (2, 4095), (2, 4097), (3, 9000)])
def test_sizes_across_block_edges(n, c):
    torch.manual_seed(c)
    logits, target = torch.randn(n, c, dtype=torch.float64), torch.randint(c, (n,))
    for label_smoothing in (0.0, 0.1):
        loss, grad, upstream = _triton(logits, target, beta=0.05, reduction="sum", label_smoothing=label_smoothing)
        x = logits.clone().requires_grad_()
        ref = gradient_decay_loss(x, target, 0.05, reduction="sum", label_smoothing=label_smoothing,
                                  backend="composite")
        (expected_grad,) = torch.autograd.grad(ref, x, upstream)
        torch.testing.assert_close(loss, ref.detach(), rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(grad, expected_grad, rtol=1e-4, atol=1e-7)


def test_every_row_ignored():
    logits, target, _ = _case(ignored=range(5))
    for reduction, value in (("mean", float("nan")), ("sum", 0.0)):
        loss, grad, _ = _triton(logits, target, beta=0.1, reduction=reduction)
        torch.testing.assert_close(loss, torch.tensor(value, dtype=torch.float64), equal_nan=True)
        assert (grad == 0).all()  # as F.cross_entropy: NaN mean, zero gradient
    loss, grad, _ = _triton(logits, target, beta=0.1, reduction="none")
    assert (loss == 0).all()
    assert (grad == 0).all()


def test_in_place_writes_the_gradient_over_the_logits():
    logits, target, _ = _case()
    x = logits.float().to(DEVICE)
    expected = gradient_decay_loss(x.clone().requires_grad_(), target.to(DEVICE), 0.1, backend="triton")
    buffer = x.clone()
    loss = triton_beta.triton_target_loss(buffer, target.to(DEVICE), beta=0.1, inplace=True)
    torch.testing.assert_close(loss, expected.detach())
    y = x.clone().requires_grad_()
    (grad,) = torch.autograd.grad(gradient_decay_loss(y, target.to(DEVICE), 0.1, backend="composite"), y)
    torch.testing.assert_close(buffer, grad, rtol=1e-5, atol=1e-7)  # the logits now hold the gradient


def test_the_module_and_the_errors():
    logits, target, _ = _case()
    criterion = GradientDecayLoss(beta=0.1, backend="triton")
    x = logits.float().to(DEVICE)
    torch.testing.assert_close(criterion(x, target.to(DEVICE)),
                               gradient_decay_loss(x, target.to(DEVICE), 0.1, backend="composite"))
    with pytest.raises(ValueError, match="backend='triton' cannot compute this call: it computes in float32 from"):
        gradient_decay_loss(logits, target, 0.1, backend="triton")  # float64
    with pytest.raises(ValueError, match="backend='triton' computes in float32, which beta=1e\\+30"):
        gradient_decay_loss(x, target.to(DEVICE), 1e30, backend="triton")
    with pytest.raises(ValueError, match="class-index targets"):
        gradient_decay_loss(x, torch.softmax(x, 1), 0.1, backend="triton")


# ---- the fused linear loss on the Triton kernel -------------------------------------------------

from gdsoftmax.loss.triton_linear import triton_fused_linear_loss  # noqa: E402


def _linear_case(n=9, h=6, vocab=21, seed=0, dtype=torch.float64):
    torch.manual_seed(seed)
    hidden, weight = torch.randn(n, h, dtype=dtype), torch.randn(vocab, h, dtype=dtype)
    bias, target = torch.randn(vocab, dtype=dtype), torch.randint(vocab, (n,))
    target[3] = -100
    return hidden, weight, bias, target


def _linear_reference(hidden, weight, bias, target, *, class_weight, row_weight, reduction, **options):
    """matmul, then the composite loss per row, times the row weights, reduced by hand (float64)."""
    per_row = gradient_decay_loss(hidden @ weight.T + bias, target, weight=class_weight, reduction="none",
                                  backend="composite", **options)
    per_row = per_row * (1.0 if row_weight is None else row_weight)
    if reduction == "none":
        return per_row
    kept = (target != -100).double() * (1.0 if class_weight is None else class_weight[target.clamp_min(0)])
    total = (kept * (1.0 if row_weight is None else row_weight)).sum()
    return per_row.sum() / total if reduction == "mean" else per_row.sum()


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize("label_smoothing", [0.0, 0.1])
@pytest.mark.parametrize("weights", ["none", "class", "class+row"])
def test_fused_linear_matches_matmul_then_loss(reduction, label_smoothing, weights):
    hidden, weight, bias, target = _linear_case()
    class_weight = torch.rand(21, dtype=torch.float64) + 0.5 if weights != "none" else None
    row_weight = torch.rand(9, dtype=torch.float64) + 0.5 if weights == "class+row" else None
    options = {"beta": 0.1, "tau": 0.8, "label_smoothing": label_smoothing}
    inputs = [t.clone().requires_grad_() for t in (hidden, weight, bias)]
    expected = _linear_reference(*inputs, target, class_weight=class_weight, row_weight=row_weight,
                                 reduction=reduction, **options)
    upstream = torch.linspace(0.5, 1.5, expected.numel(), dtype=torch.float64).reshape(expected.shape)
    expected_grads = torch.autograd.grad(expected, inputs, upstream)
    ours = [t.float().to(DEVICE).requires_grad_() for t in (hidden, weight, bias)]
    loss = triton_fused_linear_loss(ours[0], ours[1], target.to(DEVICE), bias=ours[2], reduction=reduction,
                                    class_weight=None if class_weight is None else class_weight.float().to(DEVICE),
                                    row_weight=None if row_weight is None else row_weight.float().to(DEVICE),
                                    chunk_rows=4, **options)  # 3 chunks, the last one short
    grads = torch.autograd.grad(loss, ours, upstream.float().to(DEVICE))
    torch.testing.assert_close(loss.double().cpu(), expected.detach(), rtol=1e-5, atol=1e-6)
    for ours_grad, expected_grad in zip(grads, expected_grads, strict=True):
        torch.testing.assert_close(ours_grad.double().cpu(), expected_grad, rtol=1e-4, atol=1e-5)


def test_fused_linear_in_bf16_accumulates_the_logits_in_float32():
    hidden, weight, _, target = _linear_case(dtype=torch.float32)
    h, w = hidden.bfloat16().to(DEVICE).requires_grad_(), weight.bfloat16().to(DEVICE).requires_grad_()
    loss = triton_fused_linear_loss(h, w, target.to(DEVICE), 0.1, reduction="sum")
    grads = torch.autograd.grad(loss, (h, w))
    x, y = h.detach().double().cpu().requires_grad_(), w.detach().double().cpu().requires_grad_()
    expected = gradient_decay_loss(x @ y.T, target, 0.1, reduction="sum", backend="composite")
    expected_grads = torch.autograd.grad(expected, (x, y))
    assert loss.dtype == torch.float32
    torch.testing.assert_close(loss.double().cpu(), expected.detach(), rtol=1e-5, atol=1e-5)  # no bf16 logits
    for ours, ref in zip(grads, expected_grads, strict=True):  # one bf16 rounding of each gradient
        torch.testing.assert_close(ours.double().cpu(), ref, rtol=2 ** -7, atol=1e-3)


def test_the_gpu_benchmark_runs_its_code_path_in_the_interpreter(tmp_path):
    import subprocess
    import sys
    from pathlib import Path

    script = Path(__file__).resolve().parents[2] / "bench" / "bench_triton.py"
    env = {**os.environ, "TRITON_INTERPRET": "1"}
    result = subprocess.run([sys.executable, str(script), "--quick", "--out", str(tmp_path)], env=env,
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr
    text = (tmp_path / "triton_smoke.md").read_text()
    assert "β-loss, Triton (gdsoftmax)" in text
    assert "fused linear β-loss, Triton (gdsoftmax)" in text
