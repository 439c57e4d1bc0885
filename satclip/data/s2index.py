"""S2-100K indexes: ``index.csv`` or ``metadata.parquet`` (a path or URL) -> each file's (lon, lat)
and acquisition time."""

from __future__ import annotations

import csv
import io
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from ..acqtime import parse_time
from ..columns import CoordinateColumnsError, find_coordinate_columns, find_time_column
from . import remote
from .sources import ShardInputError

INDEX_NAMES = ("index.csv", "metadata.parquet")
"""An S2-100K folder's index, in the order looked for."""


def _index_rows(path: str | Path) -> tuple[list[str], Iterator[tuple[int, dict]]]:
    """Column names and (line, row) of an index (a path or URL): CSV text, or Parquet (values as
    text; line = row + 2)."""
    if str(path).endswith(".parquet"):
        try:
            with remote.parquet_file(path) as parquet, remote.reading(path):
                table = parquet.read()
        except OSError as err:
            raise ShardInputError(f"index {path}: not a readable Parquet file ({err})") from err
        columns = {name: table.column(name).to_pylist() for name in table.column_names}
        rows = ({name: "" if v[i] is None else str(v[i]) for name, v in columns.items()} for i in range(table.num_rows))
        return list(table.column_names), enumerate(rows, start=2)
    if remote.is_url(path):
        with remote.open_stream(str(path)) as raw, remote.reading(path):
            text = raw.read().decode()
        reader = csv.DictReader(io.StringIO(text, newline=""))
        return list(reader.fieldnames or []), iter(list(enumerate(reader, start=2)))
    with Path(path).open(newline="") as f:
        reader = csv.DictReader(f)
        return list(reader.fieldnames or []), iter(list(enumerate(reader, start=2)))


@dataclass(frozen=True)
class IndexTable:
    """An S2-100K index read: file name -> (lon, lat), and file name -> Unix seconds (NaN: empty
    cell) when the index has an acquisition-time column (``time_col``)."""

    lonlat: dict[str, tuple[float, float]]
    times: dict[str, float] | None = None
    time_col: str | None = None


def read_index_table(
    path: str | Path, lon_col: str | None = None, lat_col: str | None = None, crs: str | None = None, time_col: str | None = None
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
    fields, rows = _index_rows(path)
    if "fn" not in fields:
        raise ShardInputError(f"index {path}: missing column(s) ['fn']; found {fields}")
    try:
        lon, lat = find_coordinate_columns(fields, lon_col, lat_col, crs, where=f"index {path}")
        when = find_time_column(fields, time_col, where=f"index {path}")
    except CoordinateColumnsError as err:
        raise ShardInputError(str(err)) from None
    names, coords, seconds = [], [], []
    for line, row in rows:
        try:
            coords.append((float(row[lon]), float(row[lat])))
        except (TypeError, ValueError):
            raise ShardInputError(f"index {path} line {line} ({row['fn']!r}): {lon}={row[lon]!r}, {lat}={row[lat]!r} are not numbers") from None
        if when is not None:
            try:
                seconds.append(parse_time(row[when] or "", when))
            except ValueError as err:
                raise ShardInputError(f"index {path} line {line} ({row['fn']!r}): {err}") from None
        names.append(os.path.basename(row["fn"]))
    if not names:
        raise ShardInputError(f"index {path} has no rows")
    seen: set[str] = set()
    for name in names:
        if name in seen:
            raise ShardInputError(f"index {path}: file {name!r} is listed more than once")
        seen.add(name)
    try:
        lonlat = validate_lonlat(torch.tensor(coords, dtype=torch.float64), name=f"index {path} (data rows from 0)")
    except ValueError as err:
        raise ShardInputError(str(err)) from None
    table = {name: (float(lon), float(lat)) for name, (lon, lat) in zip(names, lonlat.tolist())}
    return IndexTable(table, dict(zip(names, seconds)) if when is not None else None, when)


def read_index(path: str | Path, lon_col: str | None = None, lat_col: str | None = None, crs: str | None = None) -> dict[str, tuple[float, float]]:
    """File name (basename of ``fn``) -> (lon, lat) degrees of an S2-100K index (:func:`read_index_table`)."""
    return read_index_table(path, lon_col, lat_col, crs).lonlat


__all__ = ["INDEX_NAMES", "IndexTable", "read_index", "read_index_table"]
