"""The train/test splits of ``satclip bench``'s protocols, as (train, test) index pairs.

- ``random``: shuffled k-fold (:func:`satclip.probes.fold_indices`, the folds of ``satclip probe``);
- ``spatial``: k-fold over whole ``block_deg`` x ``block_deg`` lon/lat blocks, so no block holds
  both training and test points;
- ``buffered``: the folds of ``base`` (random or spatial) with every training point within
  ``buffer_km`` (great-circle) of any test point dropped, so each test point is farther than
  ``buffer_km`` from every training point;
- ``holdout``: one split given by a column: rows whose value is ``test_value`` are the test set,
  the others train.

A label budget keeps a random subset of each fold's training rows (:func:`budget_subset`).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..geo import EARTH_RADIUS_KM
from ..probes import fold_indices

Folds = list[tuple[np.ndarray, np.ndarray]]
PROTOCOL_KINDS = ("random", "spatial", "buffered", "holdout")


@dataclass(frozen=True)
class Protocol:
    """One evaluation protocol (the module docstring defines the kinds)."""

    name: str
    kind: str
    folds: int = 5
    block_deg: float = 10.0
    buffer_km: float = 0.0
    base: str = "random"
    column: str | None = None
    test_value: str = "test"


def unit_vectors(lonlat: np.ndarray) -> np.ndarray:
    """(N, 3) points on the unit sphere of (N, 2) [lon, lat] degrees."""
    lon, lat = np.radians(lonlat[:, 0]), np.radians(lonlat[:, 1])
    return np.stack([np.cos(lat) * np.cos(lon), np.cos(lat) * np.sin(lon), np.sin(lat)], axis=1)


def within_km(points: np.ndarray, centres: np.ndarray, *, km: float, chunk: int = 4096) -> np.ndarray:
    """(N,) bool: whether each of ``points`` lies within ``km`` (great-circle) of any of ``centres``.

    Compares dot products of unit vectors with cos(km / R), in chunks of ``chunk`` points."""
    near = np.zeros(len(points), dtype=bool)
    if len(centres) == 0 or len(points) == 0:
        return near
    threshold = np.cos(min(km / EARTH_RADIUS_KM, np.pi))
    p, c = unit_vectors(points), unit_vectors(centres)
    for i in range(0, len(p), chunk):
        near[i : i + chunk] = (p[i : i + chunk] @ c.T).max(axis=1) >= threshold
    return near


def buffered(folds: Folds, lonlat: np.ndarray, *, buffer_km: float) -> Folds:
    """``folds`` with the training rows within ``buffer_km`` of any of their fold's test rows removed."""
    return [(train[~within_km(lonlat[train], lonlat[test], km=buffer_km)], test) for train, test in folds]


def holdout(values: np.ndarray, test_value: str, *, where: str) -> Folds:
    """One (train, test) pair: rows whose value (as text) is ``test_value`` are the test set."""
    is_test = np.asarray([str(v) for v in values]) == str(test_value)
    if is_test.all() or not is_test.any():
        raise ValueError(f"{where}: the hold-out needs both test rows (value {test_value!r}) and training rows, got {int(is_test.sum())} of {len(values)} test")
    return [(np.flatnonzero(~is_test), np.flatnonzero(is_test))]


def protocol_folds(protocol: Protocol, lonlat: np.ndarray, *, seed: int, column: np.ndarray | None = None, where: str = "") -> Folds:
    """The (train, test) pairs of ``protocol`` on a table's coordinates (and its hold-out ``column``)."""
    where = where or f"protocol {protocol.name!r}"
    if protocol.kind in ("random", "spatial"):
        return fold_indices(lonlat, protocol.folds, cv=protocol.kind, seed=seed, cell_deg=protocol.block_deg)
    if protocol.kind == "buffered":
        folds = buffered(fold_indices(lonlat, protocol.folds, cv=protocol.base, seed=seed, cell_deg=protocol.block_deg), lonlat, buffer_km=protocol.buffer_km)
        empty = [k for k, (train, _) in enumerate(folds) if len(train) == 0]
        if empty:
            raise ValueError(f"{where}: a {protocol.buffer_km:g} km buffer leaves no training points in fold(s) {empty}; use a smaller buffer_km")
        return folds
    if protocol.kind == "holdout":
        if column is None:
            raise ValueError(f"{where}: a holdout protocol needs the table's column {protocol.column!r}")
        return holdout(column, protocol.test_value, where=where)
    raise ValueError(f"{where}: kind must be one of {PROTOCOL_KINDS}, got {protocol.kind!r}")


def budget_subset(train: np.ndarray, budget: int | None, *, rng: np.random.Generator) -> np.ndarray:
    """``budget`` training rows drawn without replacement (all of them when None or not fewer), sorted."""
    if budget is None or budget >= len(train):
        return train
    return np.sort(rng.choice(train, budget, replace=False))


__all__ = ["PROTOCOL_KINDS", "Folds", "Protocol", "budget_subset", "buffered", "holdout", "protocol_folds", "unit_vectors", "within_km"]
