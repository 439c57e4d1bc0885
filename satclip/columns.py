"""Coordinate columns of a table, found without flags when unambiguous (``embed``, ``probe``, ``locfit``,
``shards`` indexes alike).

Longitude: ``lon``, ``longitude``, ``lng``, ``long``; latitude: ``lat``, ``latitude`` (any case). ``x`` /
``y`` count only with ``crs="EPSG:4326"`` (``--crs EPSG:4326``), which says they are degrees. Two
candidates for one axis, or none, fail with the candidates and the table's columns listed; names given
explicitly must exist.

An acquisition-time column is optional: ``time``, ``datetime``, ``timestamp``, ``acquisition_time``,
``acquired``, ``date``, ``product_datetime`` (any case), or named (``--time-col``); two candidates fail.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence

LON_NAMES = ("lon", "longitude", "lng", "long")
LAT_NAMES = ("lat", "latitude")
DEGREES_CRS = ("EPSG:4326", "OGC:CRS84", "CRS84", "WGS84")
XY = ("x", "y")
TIME_NAMES = ("time", "datetime", "timestamp", "acquisition_time", "acquired", "date", "product_datetime")


class CoordinateColumnsError(ValueError):
    """The longitude / latitude columns cannot be told from the table's header."""


def _crs_is_degrees(crs: str | None, where: str) -> bool:
    if crs is None:
        return False
    if crs.upper().replace(" ", "") not in DEGREES_CRS:
        raise CoordinateColumnsError(f"{where}: --crs {crs!r} is not supported: coordinates must be longitude/latitude degrees (EPSG:4326)")
    return True


def _pick(columns: Sequence[str], names: tuple[str, ...], *, axis: str, where: str) -> str | None:
    found = [c for c in columns if c.strip().lower() in names]
    if len(found) > 1:
        raise CoordinateColumnsError(f"{where}: more than one {axis} column: {found}; choose one with --{axis[:3]}-col")
    return found[0] if found else None


def find_coordinate_columns(
    columns: Sequence[str],
    lon_col: str | None = None,
    *,
    lat_col: str | None = None,
    crs: str | None = None,
    where: str = "table",
) -> tuple[str, str]:
    """(longitude column, latitude column) of a table with header ``columns`` (see the module docstring)."""
    columns = list(columns)
    for given in (lon_col, lat_col):
        if given is not None and given not in columns:
            raise CoordinateColumnsError(f"{where}: no column {given!r}; it has {columns}")
    degrees_xy = _crs_is_degrees(crs, where)
    lon = lon_col or _pick(columns, LON_NAMES + (XY[:1] if degrees_xy else ()), axis="longitude", where=where)
    lat = lat_col or _pick(columns, LAT_NAMES + (XY[1:] if degrees_xy else ()), axis="latitude", where=where)
    if lon is None or lat is None:
        axis = "longitude" if lon is None else "latitude"
        xy = [c for c in columns if c.strip().lower() in XY]
        hint = f"; columns {xy} may be degrees: pass --crs EPSG:4326 if so" if xy and not degrees_xy else ""
        raise CoordinateColumnsError(
            f"{where}: no {axis} column found among {columns} (looked for {list(LON_NAMES if lon is None else LAT_NAMES)}, "
            f"any case){hint}; name it with --{axis[:3]}-col"
        )
    return lon, lat


def find_time_column(columns: Sequence[str], time_col: str | None = None, *, where: str = "table") -> str | None:
    """The acquisition-time column of a table: ``time_col`` (must exist), else the one of
    :data:`TIME_NAMES` it has, else None (no time)."""
    columns = list(columns)
    if time_col is not None:
        if time_col not in columns:
            raise CoordinateColumnsError(f"{where}: no time column {time_col!r} (--time-col); it has {columns}")
        return time_col
    found = [c for c in columns if c.strip().lower() in TIME_NAMES]
    if len(found) > 1:
        raise CoordinateColumnsError(f"{where}: more than one time column: {found}; choose one with --time-col")
    return found[0] if found else None


def add_coordinate_arguments(parser: argparse.ArgumentParser) -> None:
    """``--lon-col``, ``--lat-col`` and ``--crs`` for a command that reads a table."""
    parser.add_argument("--lon-col", default=None, help="longitude column (default: found: lon, longitude, lng, long; x with --crs)")
    parser.add_argument("--lat-col", default=None, help="latitude column (default: found: lat, latitude; y with --crs)")
    parser.add_argument("--crs", default=None, help="EPSG:4326 to take columns x / y as longitude / latitude degrees")


__all__ = ["TIME_NAMES", "CoordinateColumnsError", "add_coordinate_arguments", "find_coordinate_columns", "find_time_column"]
