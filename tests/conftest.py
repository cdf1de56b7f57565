"""Shared fixtures: the loss tests run on every kernel, chosen with gradient_decay_loss's backend argument."""

from __future__ import annotations

import contextlib
import functools
import os

import pytest
import torch

# Without a GPU the Triton kernels run in Triton's interpreter, on CPU tensors. Set once for the
# whole session (before any kernel is defined), so every test sees the same backends.
if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")

from gdsoftmax.loss import gradient_decay_loss, native, supported_backends


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


def _loss_on(kernel: str, input, target, *args, **kwargs):
    """gradient_decay_loss on ``kernel`` where that kernel covers the call, else on the composite
    (which covers every call), so that one test body serves all three kernels."""
    options = {k: kwargs[k] for k in ("reduction", "label_smoothing") if k in kwargs}
    try:
        covered = kernel in supported_backends(input, target, **options)
    except Exception:  # a bad input: let gradient_decay_loss raise its own error
        covered = False
    return gradient_decay_loss(input, target, *args, backend=kernel if covered else "composite", **kwargs)


# the C++ operator's cases need its build (about 45 s on 2 cores, once per session): make test-all runs them
@pytest.fixture(params=[pytest.param("native", marks=pytest.mark.slow), "fused", "composite"])
def kernel(request) -> str:
    """The kernel under test: the C++ operator (any size), the Python fused kernel, or the composite. Only the
    native cases ask for the build (a fused or composite case must not pay its 45 s)."""
    if request.param == "native" and not request.getfixturevalue("native_built"):
        pytest.skip("the C++ operator cannot be built here (it needs a C++ compiler and ninja)")
    return request.param


@pytest.fixture
def loss_fn(kernel):
    """``gradient_decay_loss`` bound to the kernel under test (see ``_loss_on``)."""
    return functools.partial(_loss_on, kernel)


def wait_for_rows(run_dir, count: int, proc, timeout: float = 60) -> None:
    """Return once ``run_dir``'s metrics.jsonl holds ``count`` rows, or ``proc`` has ended, or ``timeout`` passed."""
    import time

    deadline = time.monotonic() + timeout
    path = run_dir / "metrics.jsonl"
    while time.monotonic() < deadline and proc.poll() is None:
        if path.exists() and path.read_text().count("\n") >= count:
            return
        time.sleep(0.005)


@contextlib.contextmanager
def interrupted_at_epoch(epoch: int):
    """Within the block, a run is interrupted (KeyboardInterrupt) as it is about to write ``epoch``'s
    row and checkpoint, as a kill at the end of that epoch would leave it; the block expects it."""
    from gdsoftmax.engine.rundir.writer import RunWriter

    real_append = RunWriter.append

    def append(run, row, checkpoint, **kwargs):
        if row.epoch == epoch:
            raise KeyboardInterrupt
        real_append(run, row, checkpoint, **kwargs)

    RunWriter.append = append
    try:
        with pytest.raises(KeyboardInterrupt):
            yield
    finally:
        RunWriter.append = real_append
