"""The user's own code, named in a config by an import path ``"module:callable"`` (the form entry points use).

``model.name = "mypkg.nets:build"`` and ``data.dataset = "mypkg.data:load"`` are resolved here: the module is
imported (from the working directory too, as ``python -m`` would), the attribute path after the colon is looked
up, and every failure (no such module, no such attribute, not callable) is one :class:`UserCodeError` that names
the config key. A notebook that has no module on disk registers its factory as a Python object
(:func:`register`), which gives it a name of the form ``"python:NAME"``.

What the code *is* belongs to a run's identity: :func:`source_fingerprint` hashes the source of the module
(or of a registered object), so that a run directory trained by one version of the user's model or data is not
resumed, reused or reported as another's.

>>> is_import_path("mypkg.nets:build"), is_import_path("timm:resnet18"), is_import_path("resnet9")
(True, False, False)
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import inspect
import os
import re
import sys
from collections.abc import Callable
from pathlib import Path

__all__ = ["RESERVED_PREFIXES", "UserCodeError", "described", "is_import_path", "register", "resolve",
           "source_fingerprint"]

# prefixes with a meaning of their own in model.name / data.dataset: never read as a module
RESERVED_PREFIXES = ("timm", "torchvision", "text", "npz", "folder")
_IMPORT_PATH = re.compile(r"^(python|[A-Za-z_][\w]*(\.[A-Za-z_]\w*)*):[A-Za-z_]\w*(\.[A-Za-z_]\w*)*$")
_REGISTERED: dict[str, Callable] = {}  # "python:NAME" -> the object a notebook gave gdsoftmax.api


class UserCodeError(ValueError):
    """The user's callable cannot be found, imported or used; the message names the config key."""


def described(error: BaseException, width: int = 160) -> str:
    """An exception from the user's code as one line: its type and the first line of its message."""
    text = str(error).splitlines()[0][:width] if str(error).strip() else "no detail"
    return f"{type(error).__name__}: {text}"


def is_import_path(name: str) -> bool:
    """Whether ``name`` names the user's own callable (``module:callable`` or a registered ``python:NAME``)."""
    return (isinstance(name, str) and bool(_IMPORT_PATH.match(name))
            and name.partition(":")[0] not in RESERVED_PREFIXES)


def register(factory: Callable, kind: str) -> str:
    """Register a Python object (a model or data factory) and return the ``"python:NAME"`` a config names it by.

    The name carries a hash of the object's source, so two different functions of one name never share runs.

    >>> def build(num_classes, image_shape):
    ...     return None
    >>> register(build, "model").startswith("python:build_")
    True
    """
    if not callable(factory):
        raise UserCodeError(f"{kind}: expected a callable (a function or a class), got {type(factory).__name__}")
    base = re.sub(r"\W", "_", getattr(factory, "__qualname__", type(factory).__name__))
    name = f"python:{base}_{_object_digest(factory)[:8]}"
    _REGISTERED[name] = factory
    return name


def resolve(path: str, key: str) -> Callable:
    """The callable ``path`` names, or UserCodeError naming ``key`` and what to fix."""
    if path in _REGISTERED:
        return _REGISTERED[path]
    module_name, _, attributes = path.partition(":")
    if module_name == "python":
        raise UserCodeError(f"{key} = {path!r} names a Python object registered in another process; pass the "
                            "object to gdsoftmax.api again in this one, or name it by module:callable")
    module = _import(module_name, key, path)
    target = module
    for attribute in attributes.split("."):
        if not hasattr(target, attribute):
            raise UserCodeError(f"{key} = {path!r}: module {module_name} has no {attributes!r} "
                                f"({module.__file__}); check the name after the colon")
        target = getattr(target, attribute)
    if not callable(target):
        raise UserCodeError(f"{key} = {path!r} is a {type(target).__name__}, not a callable; name a function or "
                            "a class")
    return target


def _with_working_directory_on_path() -> None:
    """`python -m` and notebooks import from the folder they run in: so does a config's module path."""
    if os.getcwd() not in sys.path and "" not in sys.path:
        sys.path.insert(0, os.getcwd())


def _import(module_name: str, key: str, path: str):
    _with_working_directory_on_path()
    try:
        return importlib.import_module(module_name)
    except ModuleNotFoundError as error:
        if error.name and module_name.startswith(error.name):
            builtin = " (or name a built-in model, timm:NAME or torchvision:NAME)" if key == "model.name" else ""
            raise UserCodeError(f"{key} = {path!r}: no module named {module_name!r} on the Python path (run "
                                f"from the folder that holds it, or pip install -e your package){builtin}") from error
        raise UserCodeError(f"{key} = {path!r}: importing {module_name} failed: it needs {error.name!r}, which is "
                            "not installed") from error
    except Exception as error:  # the user's module raised while it was imported
        raise UserCodeError(f"{key} = {path!r}: importing {module_name} raised {described(error)}") from error


def source_fingerprint(path: str, key: str) -> str:
    """A short hash of the source behind ``path``: the module's file (``module:callable``) or the registered
    object's source (``python:NAME``). Part of a run's identity."""
    if path in _REGISTERED:
        return _object_digest(_REGISTERED[path])[:16]
    module_name = path.partition(":")[0]
    if module_name == "python":
        return "unregistered"
    source = _module_source(module_name)
    if source is None:
        resolve(path, key)  # raises the error that says why the module cannot be found
        source = _module_source(module_name)
    return hashlib.sha256(source or module_name.encode()).hexdigest()[:16]


def _module_source(module_name: str) -> bytes | None:
    _with_working_directory_on_path()
    try:
        spec = importlib.util.find_spec(module_name)
    except (ImportError, ValueError):  # a parent package that does not import
        return None
    if spec is None or not spec.origin or not Path(spec.origin).is_file():
        return None
    return Path(spec.origin).read_bytes()


def _object_digest(obj) -> str:
    try:
        text = inspect.getsource(obj)
    except (OSError, TypeError):  # defined where no source is kept (an exec'd string): hash its code instead
        code = getattr(obj, "__code__", None)
        text = repr((code.co_code, code.co_consts, code.co_names)) if code else repr(obj)
    return hashlib.sha256(text.encode()).hexdigest()
