"""Reading coordinate tables: the one reader of the CSV, Parquet and NPY files satclip takes.

:func:`read_chunks` streams a file (Arrow's streaming CSV reader, Parquet row batches, a
memory-mapped ``.npy``) as (first row, [lon, lat(, t)], carried columns) chunks for ``satclip embed``
and ``locate`` galleries; :func:`read_table` reads a whole CSV / Parquet file as an Arrow table for
``probe``, ``locfit``, ``bench`` tasks, the training-time geography probes and ``locate``'s image
embeddings, through the same reader. A CSV column whose values stop fitting the type Arrow inferred
from the first block (an id that turns from numbers to text) is read again as text.
:func:`time_seconds` is the one conversion of a time column to Unix seconds UTC
(:mod:`satclip.acqtime`): Arrow timestamps (naive = UTC) and dates, numbers (Unix seconds), or
text parsed by :func:`satclip.acqtime.parse_time`. Coordinates are checked against
:data:`satclip.geo.LONLAT_RULE` (:func:`check_coordinates`).
"""

from __future__ import annotations

import csv
import math
import re
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from .acqtime import parse_time
from .columns import find_coordinate_columns
from .geo import LONLAT_RULE, valid_lonlat

INPUT_FORMATS = (".csv", ".parquet", ".npy")
PARQUET = (".parquet", ".pq")
CSV_BLOCK_BYTES = 1 << 22  # Arrow CSV read block: ~4 MB of text per chunk
MAX_BAD_ROWS_SHOWN = 10

Chunk = tuple[int, np.ndarray, Any]  # (first global row, (n, 2) [lon, lat] or (n, 3) [lon, lat, t] float64, carried columns or None)


def check_format(path: Path, allowed: tuple[str, ...], *, what: str) -> str:
    """``path``'s lower-case suffix; a ``ValueError`` naming ``what`` and ``path`` when it is not in ``allowed``."""
    suffix = path.suffix.lower()
    if suffix not in allowed:
        raise ValueError(f"{what} {str(path)!r}: unsupported format {suffix or '(no extension)'!r}; use one of {', '.join(allowed)}")
    return suffix


def invalid_coordinates(lonlat: np.ndarray) -> np.ndarray:
    """Mask of the rows of (n, 2) [lon, lat] that break :data:`satclip.geo.LONLAT_RULE` (missing too); of
    (n, 3) [lon, lat, t] also those with an infinite time (NaN time is unknown, not invalid)."""
    bad = ~valid_lonlat(lonlat[:, 0], lonlat[:, 1])
    return bad | np.isinf(lonlat[:, 2]) if lonlat.shape[1] == 3 else bad


def check_coordinates(lonlat: np.ndarray, *, start: int, source: str) -> None:
    """Raise ``ValueError`` naming ``source`` and the global rows that break :data:`satclip.geo.LONLAT_RULE`."""
    bad = invalid_coordinates(lonlat)
    if bad.any():
        rows = np.flatnonzero(bad)
        shown = ", ".join(f"{start + r} (lon={float(lonlat[r, 0])!r}, lat={float(lonlat[r, 1])!r})" for r in rows[:MAX_BAD_ROWS_SHOWN])
        more = f" and {rows.size - MAX_BAD_ROWS_SHOWN} more in this chunk" if rows.size > MAX_BAD_ROWS_SHOWN else ""
        raise ValueError(
            f"{source}: invalid coordinates (expected {LONLAT_RULE}{'; and a finite or empty time' if lonlat.shape[1] == 3 else ''}) "
            f"in data rows {shown}{more} "
            f"(rows counted from 0, header excluded)"
        )


def _npy_chunks(path: Path, chunk_rows: int) -> tuple[int, Iterator[Chunk]]:
    array = np.load(path, mmap_mode="r")
    if array.ndim != 2 or array.shape[1] not in (2, 3):
        raise ValueError(
            f"{str(path)!r}: expected an (N, 2) array of [lon, lat] degrees (or (N, 3) [lon, lat, t] for a time-aware tower), got shape {array.shape}"
        )
    if not np.issubdtype(array.dtype, np.number):
        raise ValueError(f"{str(path)!r}: expected a numeric array, got dtype {array.dtype}")

    def chunks() -> Iterator[Chunk]:
        for start in range(0, array.shape[0], chunk_rows):
            yield start, np.array(array[start : start + chunk_rows], dtype=np.float64), None  # a writable copy

    return array.shape[0], chunks()


class ColumnTypeChanged(ValueError):
    """A CSV column's values stop fitting the type Arrow inferred from the file's first block."""

    def __init__(self, path: Path, column: str, *, err: Exception) -> None:
        super().__init__(f"{str(path)!r}: column {column!r} changes type after the first rows: {err}")
        self.column = column


def _arrow_batches(path: Path, suffix: str, *, chunk_rows: int, columns: list[str] | None = None, text: Sequence[str] = ()) -> tuple[Any, Iterator[Any]]:
    """(schema, record batches) of a CSV or Parquet file; CSV columns in ``text`` are read as text."""
    if suffix in PARQUET:
        import pyarrow.parquet as pq

        try:
            file = pq.ParquetFile(path)
        except Exception as err:  # noqa: BLE001 - ArrowInvalid / OSError: not Parquet, truncated
            raise ValueError(f"{str(path)!r}: not a readable Parquet file: {err}") from None
        return file.schema_arrow, file.iter_batches(batch_size=chunk_rows, columns=columns)
    import pyarrow as pa
    import pyarrow.csv as pacsv

    convert = pacsv.ConvertOptions(include_columns=columns or [], column_types={c: pa.string() for c in text})
    try:
        reader = pacsv.open_csv(path, read_options=pacsv.ReadOptions(block_size=CSV_BLOCK_BYTES), convert_options=convert)
    except pa.ArrowInvalid as err:
        raise ValueError(f"{str(path)!r}: not a readable CSV: {err}") from None
    return reader.schema, _csv_batches(path, reader)


def _csv_batches(path: Path, reader: Any) -> Iterator[Any]:
    """The reader's batches; a value that does not fit its column's inferred type is a :class:`ColumnTypeChanged`."""
    import pyarrow as pa

    try:
        yield from reader
    except pa.ArrowInvalid as err:
        found = re.search(r"CSV column #(\d+): (?:Row #\d+: )?CSV conversion error", str(err))
        if found is None:
            raise ValueError(f"{str(path)!r}: not a readable CSV: {err}") from None
        raise ColumnTypeChanged(path, _csv_header(path)[int(found.group(1))], err=err) from None


def _csv_header(path: Path) -> list[str]:
    """The column names of a CSV file's header (Arrow numbers its columns in the file, also when
    reading only some of them)."""
    with path.open(newline="", encoding="utf-8-sig") as f:
        return next(csv.reader(f), [])


def _count_rows(path: Path, suffix: str, *, lat_col: str) -> int:
    if suffix in PARQUET:
        import pyarrow.parquet as pq

        return pq.ParquetFile(path).metadata.num_rows
    _, batches = _arrow_batches(path, suffix, chunk_rows=0, columns=[lat_col])
    return sum(batch.num_rows for batch in batches)


def _column(batch: Any, name: str, *, path: Path) -> np.ndarray:
    import pyarrow as pa

    try:
        return batch.column(name).cast(pa.float64()).to_numpy(zero_copy_only=False)  # nulls -> NaN
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as err:
        raise ValueError(f"{str(path)!r}: column {name!r} is not numeric ({batch.schema.field(name).type}): {err}") from None


def time_seconds(column: Any, *, name: str, where: str, start: int = 0) -> np.ndarray:
    """An Arrow time column as float64 Unix seconds UTC (NaN where empty): timestamps (naive = UTC) and
    dates, numbers (Unix seconds), or text parsed by :func:`satclip.acqtime.parse_time`; an error
    names ``where``, the column and the data row (``start`` is the first row's number)."""
    import pyarrow as pa

    kind = column.type

    def as_float(values: Any) -> np.ndarray:
        return values.cast(pa.float64()).to_numpy(zero_copy_only=False)

    if pa.types.is_timestamp(kind):
        return as_float(column.cast(pa.int64())) * {"s": 1.0, "ms": 1e-3, "us": 1e-6, "ns": 1e-9}[kind.unit]
    if pa.types.is_date32(kind):
        return as_float(column.cast(pa.int32())) * 86400.0
    if pa.types.is_date64(kind):
        return as_float(column.cast(pa.int64())) * 1e-3
    if pa.types.is_integer(kind) or pa.types.is_floating(kind) or pa.types.is_null(kind):
        return as_float(column)
    if pa.types.is_string(kind) or pa.types.is_large_string(kind):
        return np.array([parse_time(v or "", name=f"{where} column {name!r} data row {start + i}") for i, v in enumerate(column.to_pylist())], dtype=np.float64)
    raise ValueError(f"{where}: time column {name!r} has type {kind}; expected ISO 8601 text, a timestamp or Unix seconds")


def _table_chunks(
    path: Path,
    suffix: str,
    *,
    lon_col: str | None,
    lat_col: str | None,
    crs: str | None,
    chunk_rows: int,
    text: Sequence[str] = (),
    time_col: str | None = None,
) -> tuple[int, Iterator[Chunk]]:
    import pyarrow as pa

    schema, batches = _arrow_batches(path, suffix, chunk_rows=chunk_rows, text=text)
    lon, lat = find_coordinate_columns(schema.names, lon_col, lat_col=lat_col, crs=crs, where=repr(str(path)))
    if lon == lat:
        raise ValueError(f"{str(path)!r}: the longitude and latitude columns are both {lon!r}; name two columns (--lon-col, --lat-col)")
    if time_col is not None and time_col not in schema.names:
        raise ValueError(f"{str(path)!r}: no time column {time_col!r} (--time-col); it has {schema.names}")

    def coordinates_must_be_numbers(change: ColumnTypeChanged) -> Exception:
        return ValueError(f"{change} (coordinates must be numbers)") if change.column in (lon, lat) else change

    try:
        total = _count_rows(path, suffix, lat_col=lat)
    except ColumnTypeChanged as change:
        raise coordinates_must_be_numbers(change) from None
    if total == 0:
        raise ValueError(f"{str(path)!r}: no data rows (only a header)")

    def chunks() -> Iterator[Chunk]:
        start = 0
        try:
            for batch in batches:
                coords = [_column(batch, lon, path=path), _column(batch, lat, path=path)]
                if time_col is not None:
                    coords.append(time_seconds(batch.column(time_col), name=time_col, where=repr(str(path)), start=start))
                lonlat = np.stack(coords, axis=1)
                carried = pa.Table.from_batches([batch]).drop_columns([lon, lat])
                yield start, lonlat, carried
                start += batch.num_rows
        except ColumnTypeChanged as change:
            raise coordinates_must_be_numbers(change) from None

    return total, chunks()


def read_chunks(
    path: str | Path,
    *,
    lon_col: str | None = None,
    lat_col: str | None = None,
    chunk_rows: int = 65536,
    crs: str | None = None,
    text: Sequence[str] = (),
    time_col: str | None = None,
) -> tuple[int, Iterator[Chunk]]:
    """(number of rows, iterator of (first row, (n, 2) [lon, lat], carried columns)) of a coordinate file
    (table columns found by :func:`satclip.columns.find_coordinate_columns` unless named); CSV columns
    named in ``text`` are read as text. A coordinate column that turns to text is a ``ValueError``, any
    other column a :class:`ColumnTypeChanged`. ``time_col``: (n, 3) [lon, lat, t] chunks, t in Unix
    seconds (NaN empty; the column is also carried)."""
    path = Path(path)
    suffix = check_format(path, INPUT_FORMATS, what="input")
    if not path.is_file():
        raise FileNotFoundError(f"input {str(path)!r}: no such file")
    if suffix == ".npy":
        if time_col is not None:
            raise ValueError(f"input {str(path)!r}: --time-col names a table column; an .npy input holds the time as a third column")
        return _npy_chunks(path, chunk_rows)
    return _table_chunks(path, suffix, lon_col=lon_col, lat_col=lat_col, crs=crs, chunk_rows=chunk_rows, text=text, time_col=time_col)


def read_table(path: str | Path, *, text: Sequence[str] = ()) -> Any:
    """A whole CSV / Parquet file (``.parquet`` / ``.pq``; anything else is CSV) as a ``pyarrow.Table``,
    through :func:`read_chunks`' reader: a CSV column whose values turn to text after the first rows is
    text, as are the columns in ``text``. ``ValueError`` naming the file when it is empty or unreadable."""
    import pyarrow as pa

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"table {path} does not exist")
    if path.stat().st_size == 0:
        raise ValueError(f"{path}: the file is empty (no header, no rows)")
    suffix = path.suffix.lower() if path.suffix.lower() in PARQUET else ".csv"
    as_text = list(text)
    while True:
        schema, batches = _arrow_batches(path, suffix, chunk_rows=1 << 16, text=as_text)
        try:
            return pa.Table.from_batches(list(batches), schema=schema)
        except ColumnTypeChanged as change:
            if change.column in as_text:
                raise ValueError(str(change)) from None
            as_text.append(change.column)


def numbers(column: Any) -> np.ndarray:
    """An Arrow column as float64, NaN where empty or not a number (text that is no number included)."""
    import pyarrow as pa

    if pa.types.is_string(column.type) or pa.types.is_large_string(column.type):
        return np.array([_number(v) for v in column.to_pylist()], dtype=np.float64)
    try:
        return column.cast(pa.float64()).to_numpy(zero_copy_only=False)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
        return np.full(len(column), math.nan)


def _number(text: str | None) -> float:
    try:
        return float(text) if text is not None else math.nan
    except ValueError:
        return math.nan


__all__ = [
    "INPUT_FORMATS",
    "MAX_BAD_ROWS_SHOWN",
    "ColumnTypeChanged",
    "check_coordinates",
    "check_format",
    "invalid_coordinates",
    "numbers",
    "read_chunks",
    "read_table",
    "time_seconds",
]
