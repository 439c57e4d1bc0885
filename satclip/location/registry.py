"""Name -> class registries for positional encodings and networks of the location tower."""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any, TypeVar

from torch import nn

T = TypeVar("T", bound=type[nn.Module])

POSITIONAL_ENCODINGS: dict[str, type[nn.Module]] = {}
NETWORKS: dict[str, type[nn.Module]] = {}


def _register(table: dict[str, type[nn.Module]], name: str) -> Callable[[T], T]:
    def decorator(cls: T) -> T:
        if name in table:
            raise ValueError(f"{name!r} is already registered as {table[name].__name__}")
        table[name] = cls
        return cls

    return decorator


_NOT_ROUTED = ("self", "input_dim", "output_dim")  # a network's sizes come from the builder, never as hyper-parameters


def hyperparameter_names(cls: type) -> set[str]:
    """The keyword hyper-parameters a registered encoding or network class takes."""
    return set(inspect.signature(cls).parameters) - set(_NOT_ROUTED)


def accepted_kwargs(cls: type, candidates: dict[str, Any]) -> dict[str, Any]:
    """The entries of ``candidates`` that ``cls`` takes: the one keyword router between a flat set of
    tower hyper-parameters and the encoding and network classes (builder, checkpoint reader, locfit)."""
    names = hyperparameter_names(cls)
    return {k: v for k, v in candidates.items() if k in names}


def register_encoding(name: str) -> Callable[[T], T]:
    """Class decorator: make a positional encoding available to ``build_location_encoder(pe=name)``.

    An encoding maps (N, 2) [lon, lat] degrees to (N, output_dim) and has an ``output_dim`` attribute.
    """
    return _register(POSITIONAL_ENCODINGS, name)


def register_network(name: str) -> Callable[[T], T]:
    """Class decorator: make a network available to ``build_location_encoder(nn=name)``.

    A network is constructed as ``cls(input_dim, output_dim, **hparams)``.
    """
    return _register(NETWORKS, name)
