"""Shared fixtures: the loss tests run on every implementation behind gradient_decay_loss."""

from __future__ import annotations

import os

import pytest

from gdsoftmax import functional, native


@pytest.fixture(scope="session")
def native_built() -> bool:
    """Build (or load the cached build of) the C++ operator once per session, if this machine can."""
    if os.environ.get("GDSOFTMAX_NATIVE") == "0":
        return False
    try:
        native.build()
    except Exception:  # no compiler or no ninja: the native cases skip, the Python kernels still run
        return False
    return True


@pytest.fixture(params=["native", "fused", "composite"])
def kernel(request, monkeypatch, native_built) -> str:
    """Force one implementation: the C++ operator (any size), the Python fused kernel, or the composite."""
    if request.param == "native":
        if not native_built:
            pytest.skip("the C++ operator cannot be built here (it needs a C++ compiler and ninja)")
        monkeypatch.setattr(functional, "NATIVE_MAX_ELEMENTS", 10**12)
    else:
        monkeypatch.setattr(functional, "_native_applies", lambda *args: False)
        if request.param == "composite":
            monkeypatch.setattr(functional, "_fused_applies", lambda *args: False)
    return request.param
