"""The optional C++ operator: when gradient_decay_loss uses it, and what happens without it.

Its values, gradients, double backward and errors are tested with every other implementation
by the loss tests (the ``loss_fn`` fixture in conftest.py runs each of them on it)."""

from __future__ import annotations

import os

import pytest
import torch

from gdsoftmax.cli import main
from gdsoftmax.loss import functional, gradient_decay_loss, native


class CountingModule:
    def __init__(self, module):
        self.module, self.calls = module, 0

    def beta_loss(self, *args):
        self.calls += 1
        return self.module.beta_loss(*args)


@pytest.mark.slow  # needs the C++ build (make test-all)
def test_auto_uses_the_operator_for_small_cpu_batches_and_the_fused_kernel_for_large_ones(native_built,
                                                                                          monkeypatch):
    if not native_built:
        pytest.skip("the C++ operator cannot be built here")
    monkeypatch.delenv("GDSOFTMAX_NATIVE", raising=False)
    counting = CountingModule(native.load())
    monkeypatch.setattr(native, "load", lambda: counting)
    small, target = torch.randn(100, 10, requires_grad=True), torch.randint(10, (100,))
    gradient_decay_loss(small, target, 0.1).backward()
    gradient_decay_loss(small, target, 0.1, reduction="sum", weight=torch.rand(10))
    assert counting.calls == 2
    rows = functional.NATIVE_MAX_ELEMENTS // 10 + 1
    gradient_decay_loss(torch.randn(rows, 10), torch.randint(10, (rows,)), 0.1)  # above the size limit
    gradient_decay_loss(small, target, 0.1, reduction="none")  # not a scalar: composite
    gradient_decay_loss(small, target, 0.1, label_smoothing=0.1)  # composite
    gradient_decay_loss(small.half(), target, 0.1)  # computed in float32 by the composite
    assert counting.calls == 2
    gradient_decay_loss(torch.randn(rows, 10), torch.randint(10, (rows,)), 0.1, backend="native")  # asked for
    assert counting.calls == 3
    monkeypatch.setenv("GDSOFTMAX_NATIVE", "0")
    gradient_decay_loss(small, target, 0.1)  # auto stays off it
    gradient_decay_loss(small, target, 0.1, backend="native")  # a named backend is honoured
    assert counting.calls == 4


@pytest.mark.slow  # needs the C++ build (make test-all)
def test_the_operator_agrees_with_the_fused_kernel_on_an_mnist_sized_batch(native_built):
    if not native_built:
        pytest.skip("the C++ operator cannot be built here")
    from gdsoftmax.loss.fused import fused_gradient_decay_loss

    logits, target = 5 * torch.randn(100, 10), torch.randint(10, (100,))
    a, b = logits.clone().requires_grad_(), logits.clone().requires_grad_()
    native.load().beta_loss(a, target, None, 0.01, 1.0, -100, True).backward()
    fused_gradient_decay_loss(b, target, 0.01).backward()
    torch.testing.assert_close(a.grad, b.grad, rtol=0, atol=1e-7)


@pytest.fixture
def fresh_native(monkeypatch):
    """native.load() as in a new process."""
    monkeypatch.setattr(native, "_module", None)
    monkeypatch.setattr(native, "_tried", False)
    return native


@pytest.mark.slow  # needs the C++ build (make test-all)
def test_loading_never_compiles_and_ignores_a_build_of_another_source(fresh_native, monkeypatch, native_built):
    import torch.utils.cpp_extension as cpp_extension

    def no_compiler(*args, **kwargs):
        raise AssertionError("load() must not start a compiler")

    monkeypatch.setattr(cpp_extension, "load", no_compiler)
    assert fresh_native.available() == native_built  # a current build loads without compiling
    monkeypatch.setattr(fresh_native, "_module", None)
    monkeypatch.setattr(fresh_native, "_tried", False)
    monkeypatch.setattr(fresh_native, "_source_stamp", lambda: "another source")
    assert fresh_native.load() is None  # a stale build is not loaded (only build() rebuilds it)


def test_native_backend_without_a_build_says_how_to_build_it(fresh_native, monkeypatch):
    monkeypatch.setattr(fresh_native, "_tried", True)  # as if nothing were built
    with pytest.raises(ValueError, match="gdsoftmax build-native"):
        gradient_decay_loss(torch.randn(4, 3), torch.tensor([0, 1, 2, 0]), 0.5, backend="native")
    assert gradient_decay_loss(torch.randn(4, 3), torch.tensor([0, 1, 2, 0]), 0.5).isfinite()  # auto still works


def test_without_a_compiler_the_python_kernels_serve(fresh_native, monkeypatch, capsys):
    import torch.utils.cpp_extension as cpp_extension

    def no_compiler(*args, **kwargs):
        raise RuntimeError("Ninja is required to load C++ extensions")

    monkeypatch.setattr(cpp_extension, "load", no_compiler)
    monkeypatch.setattr(fresh_native, "_tried", True)  # as if nothing were built
    loss = gradient_decay_loss(torch.randn(4, 3), torch.tensor([0, 1, 2, 0]), 0.5)  # still works
    assert torch.isfinite(loss)
    assert main(["build-native"]) == 2
    err = capsys.readouterr().err
    assert "Ninja is required" in err
    assert "pip install ninja" in err


def test_pip_ninja_is_found_without_an_activated_venv(monkeypatch):
    ninja = pytest.importorskip("ninja")
    monkeypatch.setattr(native.shutil, "which", lambda name: None)
    monkeypatch.setenv("PATH", "/nowhere")
    native._put_ninja_on_path()
    assert os.environ["PATH"].split(os.pathsep)[0] == ninja.BIN_DIR
