"""S2-100K indexes: ``index.csv`` or ``metadata.parquet`` (a path or URL) -> each file's (lon, lat)
and acquisition time."""

from __future__ import annotations

import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..columns import CoordinateColumnsError, find_coordinate_columns, find_time_column
from ..tables import numbers, read_table, time_seconds
from . import remote
from .sources import ShardInputError

INDEX_NAMES = ("index.csv", "metadata.parquet")
"""An S2-100K folder's index, in the order looked for."""


def _index_table(path: str | Path) -> Any:
    """The index (a path or URL) as a ``pyarrow.Table`` through the one table reader
    (:func:`satclip.tables.read_table`; ``fn`` as text). A URL is fetched whole to a temporary file
    first: an index is a few MB (S2-100K's 100k rows)."""
    if not remote.is_url(path):
        try:
            return read_table(path, text=("fn",))
        except ValueError as err:
            raise ShardInputError(f"index {err}") from None
    local_dir = tempfile.mkdtemp(prefix="satclip-index-")
    local = Path(local_dir) / ("index.parquet" if str(path).endswith(".parquet") else "index.csv")
    try:
        with remote.open_stream(str(path)) as raw, remote.reading(path), local.open("wb") as out:
            shutil.copyfileobj(raw, out)
        try:
            return read_table(local, text=("fn",))
        except ValueError as err:
            raise ShardInputError(f"index {str(err).replace(repr(str(local)), str(path))}") from None
    finally:
        shutil.rmtree(local_dir, ignore_errors=True)


def _not_numbers(column: Any, values: np.ndarray) -> np.ndarray:
    """Rows of ``column`` (read as ``values`` by :func:`satclip.tables.numbers`) that are empty or text
    that is no number (a ``nan`` is a number, for the coordinate check to call non-finite)."""
    raw = column.to_pylist()
    return np.array([bool(np.isnan(v)) and (r is None or (isinstance(r, str) and r.strip().lower() != "nan")) for v, r in zip(values, raw)], dtype=bool)


@dataclass(frozen=True)
class IndexTable:
    """An S2-100K index read: file name -> (lon, lat), and file name -> Unix seconds (NaN: empty
    cell) when the index has an acquisition-time column (``time_col``)."""

    lonlat: dict[str, tuple[float, float]]
    times: dict[str, float] | None = None
    time_col: str | None = None


def read_index_table(
    path: str | Path, lon_col: str | None = None, *, lat_col: str | None = None, crs: str | None = None, time_col: str | None = None
) -> IndexTable:
    """Read an S2-100K index, ``index.csv`` or (as published now) ``metadata.parquet``.

    Columns ``fn`` and the coordinates may come in any order among others; the coordinate columns are
    found by :func:`satclip.columns.find_coordinate_columns` (``lon``/``lat``, ``longitude``/``latitude``,
    ...) unless named; an acquisition-time column by :func:`satclip.columns.find_time_column` (``time``,
    ``datetime``, ``timestamp``, ...; parsed by :func:`satclip.acqtime.parse_time`) unless named.
    Raises :class:`ShardInputError` for a missing or ambiguous column, a value that is not a number
    or a time, a duplicate file name, or coordinates that are non-finite or have |lat| > 90
    (longitudes are wrapped).
    """
    import torch

    from ..geo import validate_lonlat

    if not remote.is_url(path):
        path = Path(path)
        if not path.is_file():
            raise ShardInputError(f"index {path} does not exist")
    index = _index_table(path)
    fields = list(index.column_names)
    if "fn" not in fields:
        raise ShardInputError(f"index {path}: missing column(s) ['fn']; found {fields}")
    try:
        lon, lat = find_coordinate_columns(fields, lon_col, lat_col=lat_col, crs=crs, where=f"index {path}")
        when = find_time_column(fields, time_col, where=f"index {path}")
    except CoordinateColumnsError as err:
        raise ShardInputError(str(err)) from None
    if index.num_rows == 0:
        raise ShardInputError(f"index {path} has no rows")
    names = [os.path.basename("" if v is None else str(v)) for v in index.column("fn").to_pylist()]
    lons, lats = numbers(index.column(lon)), numbers(index.column(lat))
    bad = _not_numbers(index.column(lon), lons) | _not_numbers(index.column(lat), lats)
    if bad.any():
        row = int(np.flatnonzero(bad)[0])
        shown = f"{lon}={index.column(lon)[row].as_py()!r}, {lat}={index.column(lat)[row].as_py()!r}"
        raise ShardInputError(f"index {path} line {row + 2} ({names[row]!r}): {shown}: not numbers (an empty cell or text)")
    seconds = None
    if when is not None:
        try:
            seconds = time_seconds(index.column(when), name=when, where=f"index {path}")
        except ValueError as err:
            raise ShardInputError(str(err)) from None
    seen: set[str] = set()
    for name in names:
        if name in seen:
            raise ShardInputError(f"index {path}: file {name!r} is listed more than once")
        seen.add(name)
    try:
        lonlat = validate_lonlat(torch.from_numpy(np.stack([lons, lats], axis=1)), name=f"index {path} (data rows from 0)")
    except ValueError as err:
        raise ShardInputError(str(err)) from None
    table = {name: (float(lon), float(lat)) for name, (lon, lat) in zip(names, lonlat.tolist())}
    return IndexTable(table, dict(zip(names, seconds.tolist())) if seconds is not None else None, when)


def read_index(path: str | Path, lon_col: str | None = None, *, lat_col: str | None = None, crs: str | None = None) -> dict[str, tuple[float, float]]:
    """File name (basename of ``fn``) -> (lon, lat) degrees of an S2-100K index (:func:`read_index_table`)."""
    return read_index_table(path, lon_col, lat_col=lat_col, crs=crs).lonlat


__all__ = ["INDEX_NAMES", "IndexTable", "read_index", "read_index_table"]
