"""An optional compiled C++ operator for the beta-loss of small CPU batches.

For (N, C) CPU logits the Python-level fused kernel (:mod:`gdsoftmax.fused`) costs about 20
operator dispatches; at 100 x 10 that is 3.5x ``F.cross_entropy``, which is one C++ call. This
module compiles ``csrc/beta_loss.cpp`` (the same formulas, one operator with a C++ autograd node)
with ``torch.utils.cpp_extension`` the first time it is asked to, which needs a C++ compiler and
ninja (``pip install ninja``) and takes about 30 seconds; the build is cached by PyTorch
(``~/.cache/torch_extensions``), so later processes load it in a fraction of a second.

:func:`gdsoftmax.gradient_decay_loss` uses the operator for small CPU batches once it is built:
``gdsoftmax build-native`` builds it (or set ``GDSOFTMAX_NATIVE=1`` to build on first use).
``GDSOFTMAX_NATIVE=0`` turns it off. Without it everything works, on the Python kernels.
"""

from __future__ import annotations

import logging
import os
import shutil
import sys
import time
from pathlib import Path

__all__ = ["available", "build", "load"]

NAME = "gdsoftmax_native"
SOURCE = Path(__file__).parent / "csrc" / "beta_loss.cpp"
_module = None
_tried = False


def _cpp_extension():
    """torch.utils.cpp_extension, imported without its import-time CUDA_HOME notice, which says
    nothing about a CPU operator and would otherwise greet every process on its first loss call."""
    logger = logging.getLogger("torch.utils.cpp_extension")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        import torch.utils.cpp_extension as cpp_extension
    finally:
        logger.setLevel(level)
    return cpp_extension


def _build_directory() -> Path:
    return Path(_cpp_extension()._get_build_directory(NAME, verbose=False))


def _put_ninja_on_path() -> None:
    """torch's extension builder runs ``ninja`` from PATH; the pip package puts it beside the
    venv's python, which is not on PATH when the venv is used without activating it."""
    if shutil.which("ninja"):
        return
    try:
        import ninja
    except ImportError:
        return
    os.environ["PATH"] = ninja.BIN_DIR + os.pathsep + os.environ.get("PATH", "")


def _compiler_flags() -> list[str]:
    """-O3, and AVX2 for ATen's Vectorized exp where this CPU has it (2-3x faster rows; a build
    is for the machine it is made on, like every torch.utils.cpp_extension JIT build)."""
    import torch

    flags = ["-O3"]
    if torch.backends.cpu.get_cpu_capability() in ("AVX2", "AVX512"):
        flags += ["-mavx2", "-mfma", "-DCPU_CAPABILITY_AVX2", "-DCPU_CAPABILITY=AVX2"]
    return flags


def build(verbose: bool = False):
    """Compile (or load the cached build of) the operator; raises if it cannot be built."""
    global _module, _tried
    _put_ninja_on_path()
    _module = _cpp_extension().load(NAME, [str(SOURCE)], extra_cflags=_compiler_flags(), verbose=verbose)
    _tried = True
    return _module


def load():
    """The compiled module if it is built (or GDSOFTMAX_NATIVE=1 asks to build it), else None."""
    global _module, _tried
    if _module is not None or _tried:
        return _module
    _tried = True
    setting = os.environ.get("GDSOFTMAX_NATIVE", "auto")
    if setting == "0":
        return None
    try:
        built = any(_build_directory().glob(f"{NAME}*.so"))
        if setting == "1" or built:
            return build()
    except Exception:  # no compiler, no ninja, a broken cache: the Python kernels serve
        _module = None
    return _module


def available() -> bool:
    """Whether gradient_decay_loss can use the operator in this process.

    >>> from gdsoftmax import native
    >>> native.available() in (True, False)
    True
    """
    return load() is not None


def main() -> int:
    """``gdsoftmax build-native``: build the operator now and say how long it took."""
    start = time.perf_counter()
    try:
        build()
    except Exception as error:  # the message says what is missing (compiler, ninja, headers)
        print(f"gdsoftmax build-native: error: could not build the C++ operator: {error}\n"
              "It needs a C++ compiler (g++ or clang++) and ninja (pip install ninja); without it "
              "gdsoftmax runs on its Python kernels.", file=sys.stderr)
        return 2
    print(f"built {NAME} in {time.perf_counter() - start:.0f} s (cached under ~/.cache/torch_extensions); "
          "gradient_decay_loss now uses it for small CPU batches")
    return 0
