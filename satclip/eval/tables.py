"""Reading the tables that ``locfit`` and ``probe`` learn from: CSV / Parquet rows of coordinates,
a target and optionally an acquisition time, checked and returned as a :class:`~.fitting.Split`."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np

from ..columns import find_coordinate_columns
from ..geo import LONLAT_RULE
from .fitting import Split


def read_table(
    path: str | Path,
    target: str | None,
    lon_col: str | None = None,
    lat_col: str | None = None,
    crs: str | None = None,
    drop_invalid: bool = False,
    time_col: str | None = None,
) -> Split:
    """Read a CSV/Parquet table as a ``Split`` (targets zero when ``target`` is None).

    Coordinate columns are found by :func:`satclip.columns.find_coordinate_columns` unless named.
    Rows with a missing or non-numeric coordinate, one breaking :data:`satclip.geo.LONLAT_RULE` or a missing target are an
    error naming them, or with ``drop_invalid`` left out and counted (``Split.dropped``). Every CSV
    column's type is inferred from the whole file (a column of numbers that turns to text is text).
    ``time_col``: acquisition times for a time-aware tower (ISO 8601 text, datetimes or Unix seconds;
    empty = unknown, kept; text that is no time is an error naming the row)."""
    import pandas as pd

    from ..io.embed import MAX_BAD_ROWS_SHOWN, invalid_coordinates

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"table {path} does not exist")
    try:
        df = pd.read_parquet(path) if path.suffix in (".parquet", ".pq") else pd.read_csv(path, low_memory=False)
    except pd.errors.EmptyDataError:
        raise ValueError(f"{path}: the file is empty (no header, no rows)") from None
    except (pd.errors.ParserError, UnicodeDecodeError, OSError) as err:
        raise ValueError(f"{path}: not a readable {'Parquet' if path.suffix in ('.parquet', '.pq') else 'CSV'} table: {err}") from None
    lon_col, lat_col = find_coordinate_columns([str(c) for c in df.columns], lon_col, lat_col, crs, where=str(path))
    if lon_col == lat_col:
        raise ValueError(f"{path}: the longitude and latitude columns are both {lon_col!r}; name two columns (--lon-col, --lat-col)")
    wanted = [lon_col, lat_col] + ([target] if target else []) + ([time_col] if time_col else [])
    missing = [c for c in wanted if c not in df.columns]
    if missing:
        raise ValueError(f"{path}: missing column(s) {missing}; it has {list(df.columns)}")
    if df.empty:
        raise ValueError(f"{path}: no data rows (only a header)")
    lonlat = np.stack([pd.to_numeric(df[c], errors="coerce").to_numpy(dtype=np.float64) for c in (lon_col, lat_col)], axis=1)
    bad = invalid_coordinates(lonlat) | (df[target].isna().to_numpy() if target else False)
    if bad.any() and not drop_invalid:
        rows = np.flatnonzero(bad)
        shown = ", ".join(map(str, rows[:MAX_BAD_ROWS_SHOWN])) + (", ..." if rows.size > MAX_BAD_ROWS_SHOWN else "")
        raise ValueError(
            f"{path}: {rows.size} of {len(df)} rows have a missing or non-numeric {lon_col}/{lat_col}, coordinates breaking the rule ({LONLAT_RULE})"
            f"{f' or no {target}' if target else ''}: data rows {shown} (from 0, header excluded); fix them or drop them "
            f"with --drop-invalid"
        )
    keep = ~bad
    if not keep.any():
        raise ValueError(f"{path}: all {len(df)} rows are invalid")
    y = df[target].to_numpy()[keep] if target else np.zeros(int(keep.sum()))
    time = _times(df[time_col], path, time_col)[keep] if time_col else None
    try:
        return Split(lonlat[keep], y, dropped=int(bad.sum()), time=time, kept=keep)
    except ValueError as err:
        raise ValueError(f"{path}: {err}") from None


def _times(column: Any, path: Path, name: str) -> np.ndarray:
    """A table's time column as Unix seconds UTC (NaN where empty): numbers are Unix seconds, datetimes
    (naive = UTC) and text go through :func:`satclip.acqtime.parse_time`'s convention."""
    import pandas as pd

    from ..acqtime import parse_time

    if pd.api.types.is_numeric_dtype(column):
        return column.to_numpy(dtype=np.float64)
    if pd.api.types.is_datetime64_any_dtype(column):
        utc = column.dt.tz_localize("UTC") if column.dt.tz is None else column.dt.tz_convert("UTC")
        seconds = (utc - pd.Timestamp(0, tz="UTC")).dt.total_seconds()
        return seconds.to_numpy(dtype=np.float64, na_value=np.nan)
    return np.array(
        [math.nan if pd.isna(v) else parse_time(str(v), name=f"{path} column {name!r} data row {i}") for i, v in enumerate(column.tolist())], dtype=np.float64
    )


__all__ = ["read_table"]
