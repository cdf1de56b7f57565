"""An optional compiled C++ operator for the beta-loss of small CPU batches.

For (N, C) CPU logits the Python-level fused kernel (:mod:`gdsoftmax.loss.fused`) costs about 20
operator dispatches; at 100 x 10 that is 3.5x ``F.cross_entropy``, which is one C++ call. This
module compiles ``csrc/beta_loss.cpp`` (the same formulas, one operator with a C++ autograd node)
with ``torch.utils.cpp_extension`` the first time it is asked to, which needs a C++ compiler and
ninja (``pip install ninja``) and takes about 30 seconds; the build is cached by PyTorch
(``~/.cache/torch_extensions``), so later processes load it in a fraction of a second.

``gdsoftmax build-native`` builds it. Once it is built, ``gradient_decay_loss(..., backend="native")``
runs it, and ``backend="auto"`` picks it for small CPU batches (``GDSOFTMAX_NATIVE=0`` keeps "auto"
off it). Loading never compiles: a build made from another source or torch is ignored until
``build`` runs again. Without it everything works, on the Python kernels.
"""

from __future__ import annotations

import hashlib
import importlib.util
import logging
import os
import shutil
import sys
import time
from pathlib import Path

__all__ = ["available", "build", "enabled", "load"]

NAME = "gdsoftmax_native"
STAMP = "gdsoftmax_source.sha256"
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


def _source_stamp() -> str:
    """What a build was made from: the source, the flags and torch's version. A build whose stamp
    differs is not loaded (it would need a rebuild, and only ``build`` compiles)."""
    import torch

    digest = hashlib.sha256(SOURCE.read_bytes())
    digest.update(" ".join(_compiler_flags()).encode() + torch.__version__.encode())
    return digest.hexdigest()


def build(verbose: bool = False):
    """Compile (or load the cached build of) the operator; raises if it cannot be built."""
    global _module, _tried
    _put_ninja_on_path()
    _module = _cpp_extension().load(NAME, [str(SOURCE)], extra_cflags=_compiler_flags(), verbose=verbose)
    _tried = True
    (_build_directory() / STAMP).write_text(_source_stamp())
    return _module


def load():
    """The compiled module if ``build`` made it from the current source, else None; never compiles."""
    global _module, _tried
    if _module is not None or _tried:
        return _module
    _tried = True
    try:
        directory = _build_directory()
        library = directory / f"{NAME}.so"
        stamp = directory / STAMP
        if library.exists() and stamp.exists() and stamp.read_text() == _source_stamp():
            import torch  # noqa: F401 - the extension links against libtorch, loaded by this import

            spec = importlib.util.spec_from_file_location(NAME, library)
            module = importlib.util.module_from_spec(spec)
            spec.loader.exec_module(module)
            _module = module
    except Exception:  # a broken cache: the Python kernels serve
        _module = None
    return _module


def available() -> bool:
    """Whether the operator is built and loads in this process (``backend="native"`` needs it).

    >>> from gdsoftmax.loss import native
    >>> native.available() in (True, False)
    True
    """
    return load() is not None


def enabled() -> bool:
    """Whether ``backend="auto"`` may use the operator: built, and GDSOFTMAX_NATIVE is not 0."""
    return os.environ.get("GDSOFTMAX_NATIVE", "auto") != "0" and available()


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
