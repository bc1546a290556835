"""A package's short names for its API (``from generator import generate``), each imported on first
use (PEP 562): importing the package stays cheap, so ``instahide --help`` loads no numba or zarr."""

from __future__ import annotations

import importlib
import sys
from collections.abc import Callable

__all__ = ["lazy_exports"]


def lazy_exports(package: str, exports: dict[str, str]) -> tuple[Callable, Callable]:
    """The module-level ``__getattr__`` and ``__dir__`` of a package that re-exports its API.

    Parameters
    ----------
    package : str
        The package's ``__name__``.
    exports : dict of str to str
        Each short name -> the module that defines it (under that name).

    Returns
    -------
    (getattr, dir) : tuple of callables
        Assign them to the package's ``__getattr__`` and ``__dir__``; a name, once imported, is
        set on the package, so the next use is a plain attribute.
    """
    module = sys.modules[package]

    def __getattr__(name: str):
        if name not in exports:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(exports[name]), name)
        setattr(module, name, value)
        return value

    def __dir__() -> list[str]:
        return sorted({*vars(module), *exports})

    return __getattr__, __dir__
