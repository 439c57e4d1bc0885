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


__all__ = ["lazy_getattr"]
