"""Bad input raises what F.cross_entropy raises; edge values behave as it does."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from gdsoftmax import GradientDecayLoss

# every test calling loss_fn runs on each kernel: C++ operator, fused kernel, composite (conftest.py)

X = torch.randn(3, 5)
T = torch.tensor([0, 1, 4])

# (name, input, target, kwargs): every case where F.cross_entropy raises.
CROSS_ENTROPY_ERRORS = [
    ("target too large", X, torch.tensor([0, 5, 1]), {}),
    ("target negative", X, torch.tensor([0, -2, 1]), {}),
    ("float class targets", X, torch.tensor([0.0, 1.0, 1.0]), {}),
    ("int32 class targets", X, T.int(), {}),
    ("bool class targets", X, torch.tensor([True, False, True]), {}),
    ("batch size mismatch", X, torch.tensor([0, 1]), {}),
    ("target batch of 1", X, torch.tensor([[0, 1, 1]]), {}),
    ("2-D target", X, torch.zeros(3, 4, dtype=torch.long), {}),
    ("0-d target for batch", X, torch.tensor(0), {}),
    ("long target of input shape", X, torch.zeros(3, 5, dtype=torch.long), {}),
    ("probabilities of wrong shape", X, torch.rand(3, 4), {}),
    ("spatial target shape", torch.randn(2, 5, 4), torch.zeros(2, 3, dtype=torch.long), {}),
    ("spatial target missing dims", torch.randn(2, 5, 4), torch.zeros(2, dtype=torch.long), {}),
    ("spatial target extra dim", torch.randn(2, 5, 3), torch.zeros(2, 3, 1, dtype=torch.long), {}),
    ("unbatched with 2 targets", torch.randn(5), torch.tensor([1, 2]), {}),
    ("unbatched with 2-D target", torch.randn(5), torch.zeros(1, 1, dtype=torch.long), {}),
    ("0-d input", torch.tensor(1.0), torch.tensor(0), {}),
    ("integer logits", torch.ones(3, 5, dtype=torch.long), T, {}),
    ("weight of wrong size", X, T, {"weight": torch.ones(4)}),
    ("weight 2-D", X, T, {"weight": torch.ones(5, 1)}),
    ("weight of other dtype", X, T, {"weight": torch.ones(5, dtype=torch.float64)}),
    ("integer weight", X, T, {"weight": torch.ones(5, dtype=torch.long)}),
    ("unknown reduction", X, T, {"reduction": "avg"}),
    ("None reduction", X, T, {"reduction": None}),
    ("label smoothing above 1", X, T, {"label_smoothing": 1.5}),
    ("label smoothing above 1, probabilities", X, torch.rand(3, 5), {"label_smoothing": 1.1}),
    ("ignore_index with probabilities", X, torch.rand(3, 5), {"ignore_index": 2}),
    ("no classes", torch.randn(3, 0), torch.tensor([0, 0, 0]), {}),
    ("float ignore_index", X, T, {"ignore_index": 1.5}),
    ("ignore_index beyond 64 bits", X, T, {"ignore_index": 2**63}),
    ("ignore_index below 64 bits", X, T, {"ignore_index": -(2**63) - 1}),
    ("list input", [1.0, 2.0], torch.tensor(0), {}),
    ("list target", X, [0, 1, 2], {}),
]


def raised(fn):
    try:
        fn()
    except Exception as error:
        return error
    return None


@pytest.mark.parametrize(("name", "x", "t", "kwargs"), CROSS_ENTROPY_ERRORS, ids=[c[0] for c in CROSS_ENTROPY_ERRORS])
@pytest.mark.parametrize("beta", [1.0, 0.1])
def test_same_exception_type_as_cross_entropy(loss_fn, name, x, t, kwargs, beta):
    expected = raised(lambda: F.cross_entropy(x, t, **kwargs))
    assert expected is not None, f"F.cross_entropy accepts {name}; the case is mis-specified"
    ours = raised(lambda: loss_fn(x, t, beta, **kwargs))
    assert type(ours) is type(expected), f"{name}: F.cross_entropy raised {expected!r}, we raised {ours!r}"
    assert len(str(ours)) > 20  # a sentence, not a code


def test_out_of_bounds_message_names_target_and_range(loss_fn):
    with pytest.raises(IndexError, match=r"Target 5 is out of bounds.*\[0, 5\)"):
        loss_fn(X, torch.tensor([0, 5, 1]))


def test_ignore_index_outside_class_range_is_allowed(loss_fn):
    target = torch.tensor([0, 7, 1])
    expected = F.cross_entropy(X, target, ignore_index=7)
    torch.testing.assert_close(loss_fn(X, target, ignore_index=7), expected)


@pytest.mark.parametrize("name", ["beta", "tau"])
@pytest.mark.parametrize("value", [0.0, -1.0, math.nan, math.inf, -math.inf])
def test_non_positive_or_non_finite_beta_tau_raise_value_error_naming_value(loss_fn, name, value):
    with pytest.raises(ValueError, match=rf"{name} must be a finite number > 0, got {value!r}".replace("(", r"\(")):
        loss_fn(X, T, **{name: value})
    with pytest.raises(ValueError, match=name):
        GradientDecayLoss(**{name: value})


def test_module_rejects_bad_beta_on_assignment_and_keeps_old_value():
    criterion = GradientDecayLoss(0.5)
    with pytest.raises(ValueError, match="beta"):
        criterion.beta = -2.0
    assert criterion.beta == 0.5


@pytest.mark.parametrize("value", [-0.1, math.nan])
def test_negative_or_nan_label_smoothing_rejected(loss_fn, value):
    # F.cross_entropy silently accepts these; we do not.
    with pytest.raises(ValueError, match="label_smoothing"):
        loss_fn(X, T, label_smoothing=value)


@pytest.mark.parametrize("beta", ["0.5", None, True, torch.ones(2)])
def test_beta_of_wrong_type(loss_fn, beta):
    with pytest.raises((TypeError, ValueError), match="beta"):
        loss_fn(X, T, beta)


def test_beta_may_be_a_scalar_tensor(loss_fn):
    torch.testing.assert_close(loss_fn(X, T, torch.tensor(0.3)), loss_fn(X, T, 0.3))


def test_bad_input_changes_nothing(loss_fn):
    x = X.clone().requires_grad_(True)
    with pytest.raises(IndexError):
        loss_fn(x, torch.tensor([0, 9, 1]), 0.5)
    assert x.grad is None
    assert torch.equal(x.detach(), X)


# ---- edge values ---------------------------------------------------------------------------


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize("label_smoothing", [0.0, 0.1])
@pytest.mark.parametrize("beta", [0.01, 1.0, 20.0])
def test_all_targets_ignored(loss_fn, reduction, label_smoothing, beta):
    x1 = torch.randn(3, 5, requires_grad=True)
    x2 = x1.detach().clone().requires_grad_(True)
    target = torch.full((3,), -100)
    ours = loss_fn(x1, target, beta, reduction=reduction, label_smoothing=label_smoothing)
    theirs = F.cross_entropy(x2, target, reduction=reduction, label_smoothing=label_smoothing)
    torch.testing.assert_close(ours, theirs, equal_nan=True)
    if reduction == "mean":
        assert torch.isnan(ours)
    ours.sum().backward()
    assert torch.equal(x1.grad, torch.zeros_like(x1))


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize("probabilities", [False, True])
def test_empty_batch(loss_fn, reduction, probabilities):
    x = torch.randn(0, 5, requires_grad=True)
    target = torch.zeros(0, 5) if probabilities else torch.zeros(0, dtype=torch.long)
    ours = loss_fn(x, target, 0.1, reduction=reduction)
    theirs = F.cross_entropy(x.detach(), target, reduction=reduction)
    assert ours.shape == theirs.shape
    torch.testing.assert_close(ours.detach(), theirs, equal_nan=True)
    ours.sum().backward()
    assert x.grad.shape == (0, 5)


@pytest.mark.parametrize("beta", [1e-6, 0.3, 1.0, 7.0])
@pytest.mark.parametrize("probabilities", [False, True])
def test_single_class_gives_log_beta(loss_fn, beta, probabilities):
    x = torch.randn(4, 1, dtype=torch.float64, requires_grad=True)
    target = torch.ones(4, 1, dtype=torch.float64) if probabilities else torch.zeros(4, dtype=torch.long)
    loss = loss_fn(x, target, beta, reduction="none")
    torch.testing.assert_close(loss, torch.full((4,), math.log(beta), dtype=torch.float64))
    loss.sum().backward()
    assert torch.equal(x.grad, torch.zeros_like(x))


def test_unbatched_target_of_size_one_is_accepted_like_cross_entropy(loss_fn):
    x = torch.randn(5)
    for target in (torch.tensor(2), torch.tensor([2])):
        ours = loss_fn(x, target, reduction="none")
        torch.testing.assert_close(ours, F.cross_entropy(x, target, reduction="none"))
        assert ours.shape == ()


def test_a_beta_tensor_that_requires_grad_is_refused_not_silently_detached():
    from gdsoftmax import gradient_decay_loss

    beta = torch.tensor(0.5, requires_grad=True)
    with pytest.raises(ValueError, match=r"beta is a hyperparameter .* pass beta\.detach\(\)"):
        gradient_decay_loss(torch.randn(4, 3), torch.tensor([0, 1, 2, 0]), beta=beta)
    assert gradient_decay_loss(torch.randn(4, 3), torch.tensor([0, 1, 2, 0]), beta=beta.detach()).isfinite()
