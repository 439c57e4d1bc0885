"""Lazily imported package attributes: a module ``__getattr__`` that imports a name's module on first use."""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Any

from .extras import requires_extra


def lazy_getattr(package: str, table: dict[str, str]) -> Callable[[str], Any]:
    """A module-level ``__getattr__`` for ``package``: ``table`` maps a public name to the module defining it.

    A name whose module needs a missing optional extra raises ``MissingExtraError`` naming the extra.
    """

    def __getattr__(name: str) -> Any:
        if name not in table:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        with requires_extra(f"{package}.{name}"):
            return getattr(importlib.import_module(table[name]), name)

    return __getattr__


def lazy_dir(package: str, table: dict[str, str]) -> Callable[[], list[str]]:
    """A module-level ``__dir__`` for ``package``: its own globals and the lazy names, so ``dir()`` and tab completion list them."""
    import sys

    def __dir__() -> list[str]:
        return sorted({*vars(sys.modules[package]), *table})

    return __dir__


__all__ = ["lazy_dir", "lazy_getattr"]
