"""Reading the tables that ``locfit`` and ``probe`` learn from: CSV / Parquet rows of coordinates,
a target and optionally an acquisition time, checked and returned as a :class:`~.fitting.Split`."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..columns import find_coordinate_columns
from ..geo import LONLAT_RULE
from .fitting import Split


def read_table(
    path: str | Path,
    target: str | None,
    *,
    lon_col: str | None = None,
    lat_col: str | None = None,
    crs: str | None = None,
    drop_invalid: bool = False,
    time_col: str | None = None,
) -> Split:
    """Read a CSV/Parquet table as a ``Split`` (targets zero when ``target`` is None).

    The file is read by :func:`satclip.tables.read_table` (a CSV column of numbers that turns to
    text is text); coordinate columns are found by :func:`satclip.columns.find_coordinate_columns`
    unless named. Rows with a missing or non-numeric coordinate, one breaking
    :data:`satclip.geo.LONLAT_RULE` or a missing target are an error naming them, or with
    ``drop_invalid`` left out and counted (``Split.dropped``). ``time_col``: acquisition times for a
    time-aware tower (:func:`satclip.tables.time_seconds`: ISO 8601 text, timestamps or Unix
    seconds; empty = unknown, kept; text that is no time is an error naming the row)."""
    import pyarrow.compute as pc

    from ..tables import MAX_BAD_ROWS_SHOWN, invalid_coordinates, numbers, time_seconds
    from ..tables import read_table as read_arrow

    path = Path(path)
    table = read_arrow(path)
    names = table.column_names
    lon_col, lat_col = find_coordinate_columns(names, lon_col, lat_col=lat_col, crs=crs, where=str(path))
    if lon_col == lat_col:
        raise ValueError(f"{path}: the longitude and latitude columns are both {lon_col!r}; name two columns (--lon-col, --lat-col)")
    wanted = [lon_col, lat_col] + ([target] if target else []) + ([time_col] if time_col else [])
    missing = [c for c in wanted if c not in names]
    if missing:
        raise ValueError(f"{path}: missing column(s) {missing}; it has {names}")
    if table.num_rows == 0:
        raise ValueError(f"{path}: no data rows (only a header)")
    lonlat = np.stack([numbers(table.column(c)) for c in (lon_col, lat_col)], axis=1)
    no_target = pc.is_null(table.column(target), nan_is_null=True).to_numpy(zero_copy_only=False) if target else False
    bad = invalid_coordinates(lonlat) | no_target
    if bad.any() and not drop_invalid:
        rows = np.flatnonzero(bad)
        shown = ", ".join(map(str, rows[:MAX_BAD_ROWS_SHOWN])) + (", ..." if rows.size > MAX_BAD_ROWS_SHOWN else "")
        raise ValueError(
            f"{path}: {rows.size} of {table.num_rows} rows have a missing or non-numeric {lon_col}/{lat_col}, coordinates breaking the rule ({LONLAT_RULE})"
            f"{f' or no {target}' if target else ''}: data rows {shown} (from 0, header excluded); fix them or drop them "
            f"with --drop-invalid"
        )
    keep = ~bad
    if not keep.any():
        raise ValueError(f"{path}: all {table.num_rows} rows are invalid")
    y = table.column(target).to_numpy(zero_copy_only=False)[keep] if target else np.zeros(int(keep.sum()))
    time = time_seconds(table.column(time_col).combine_chunks(), name=time_col, where=str(path))[keep] if time_col else None
    try:
        return Split(lonlat[keep], y, dropped=int(bad.sum()), time=time, kept=keep)
    except ValueError as err:
        raise ValueError(f"{path}: {err}") from None


__all__ = ["read_table"]
