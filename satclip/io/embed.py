"""``satclip embed``: embed the coordinates of a CSV, Parquet or NPY file with a location tower.

Streaming: the input is read in chunks (Arrow's streaming CSV reader, Parquet row batches, a
memory-mapped ``.npy``), each chunk is embedded in batches and written straight out (``.npy``
rows written in place in a file created with the final shape, Parquet row groups, CSV appends), so
memory stays flat however many rows there are. Row order is kept; for CSV/Parquet inputs every
non-coordinate column (ids, targets) is carried to CSV/Parquet outputs next to ``emb_0 ..
emb_{D-1}``. Bad coordinates (missing, non-finite, |lat| > 90) stop the run with an error naming
the file and the global row numbers (0-based data rows); the output is written to a temporary file
and only renamed into place when every row succeeded. ``--geoparquet`` adds a WKB point
``geometry`` column and GeoParquet metadata to a Parquet output (:mod:`.geoparquet`).

A time-aware tower (``sphericalharmonics_time``) takes the acquisition time too: ``--time-col``
names a column of ISO 8601 text, Arrow timestamps / dates, or numbers (Unix seconds UTC); empty
values are unknown (NaN), text that is no time is an error naming the row. Without ``--time-col``
(or for an (N, 2) ``.npy``) every time is unknown; an (N, 3) ``.npy`` holds [lon, lat, t].
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import re
import signal
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..acqtime import parse_time
from ..cliargs import add_progress_argument
from ..columns import add_coordinate_arguments, find_coordinate_columns
from ..extras import requires_extra
from ..geo import LONLAT_RULE, valid_lonlat, wrap_longitude
from ..location import LocationEncoder
from .checkpoints import load_location_encoder
from .geoparquet import COLUMN as GEOMETRY
from .geoparquet import BBox, geo_metadata, wkb_points

INPUT_FORMATS = (".csv", ".parquet", ".npy")
OUTPUT_FORMATS = (".npy", ".parquet", ".csv")
CSV_BLOCK_BYTES = 1 << 22  # Arrow CSV read block: ~4 MB of text per chunk
READ_ROWS = 65536  # rows per Parquet / NPY read chunk (and per output write)
MAX_BAD_ROWS_SHOWN = 10

Chunk = tuple[int, np.ndarray, Any]  # (first global row, (n, 2) [lon, lat] or (n, 3) [lon, lat, t] float64, carried columns or None)


def _suffix(path: Path, allowed: tuple[str, ...], what: str) -> str:
    suffix = path.suffix.lower()
    if suffix not in allowed:
        raise ValueError(f"{what} {str(path)!r}: unsupported format {suffix or '(no extension)'!r}; use one of {', '.join(allowed)}")
    return suffix


def invalid_coordinates(lonlat: np.ndarray) -> np.ndarray:
    """Mask of the rows of (n, 2) [lon, lat] that break :data:`satclip.geo.LONLAT_RULE` (missing too); of
    (n, 3) [lon, lat, t] also those with an infinite time (NaN time is unknown, not invalid)."""
    bad = ~valid_lonlat(lonlat[:, 0], lonlat[:, 1])
    return bad | np.isinf(lonlat[:, 2]) if lonlat.shape[1] == 3 else bad


def check_coordinates(lonlat: np.ndarray, start: int, source: str) -> None:
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


# ---------------------------------------------------------------------------------------- readers


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

    def __init__(self, path: Path, column: str, err: Exception) -> None:
        super().__init__(f"{str(path)!r}: column {column!r} changes type after the first rows: {err}")
        self.column = column


def _arrow_batches(path: Path, suffix: str, chunk_rows: int, columns: list[str] | None = None, text: Sequence[str] = ()) -> tuple[Any, Iterator[Any]]:
    """(schema, record batches) of a CSV or Parquet file; CSV columns in ``text`` are read as text."""
    if suffix == ".parquet":
        import pyarrow.parquet as pq

        file = pq.ParquetFile(path)
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
        raise ColumnTypeChanged(path, _csv_header(path)[int(found.group(1))], err) from None


def _csv_header(path: Path) -> list[str]:
    """The column names of a CSV file's header (Arrow numbers its columns in the file, also when
    reading only some of them)."""
    with path.open(newline="", encoding="utf-8-sig") as f:
        return next(csv.reader(f), [])


def _count_rows(path: Path, suffix: str, lat_col: str) -> int:
    if suffix == ".parquet":
        import pyarrow.parquet as pq

        return pq.ParquetFile(path).metadata.num_rows
    _, batches = _arrow_batches(path, suffix, 0, [lat_col])
    return sum(batch.num_rows for batch in batches)


def _column(batch: Any, name: str, path: Path) -> np.ndarray:
    import pyarrow as pa

    try:
        return batch.column(name).cast(pa.float64()).to_numpy(zero_copy_only=False)  # nulls -> NaN
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as err:
        raise ValueError(f"{str(path)!r}: column {name!r} is not numeric ({batch.schema.field(name).type}): {err}") from None


def _time_column(batch: Any, name: str, path: Path, start: int) -> np.ndarray:
    """A time column as float64 Unix seconds UTC (NaN where empty): Arrow timestamps (naive = UTC) and
    dates, numbers (Unix seconds), or text parsed by :func:`satclip.acqtime.parse_time`."""
    import pyarrow as pa

    column = batch.column(name)
    kind = column.type

    def as_float(values: Any) -> np.ndarray:
        return values.cast(pa.float64()).to_numpy(zero_copy_only=False)

    if pa.types.is_timestamp(kind):
        return as_float(column.cast(pa.int64())) * {"s": 1.0, "ms": 1e-3, "us": 1e-6, "ns": 1e-9}[kind.unit]
    if pa.types.is_date32(kind):
        return as_float(column.cast(pa.int32())) * 86400.0
    if pa.types.is_date64(kind):
        return as_float(column.cast(pa.int64())) * 1e-3
    if pa.types.is_integer(kind) or pa.types.is_floating(kind):
        return as_float(column)
    if pa.types.is_string(kind) or pa.types.is_large_string(kind):
        return np.array(
            [parse_time(v or "", name=f"{str(path)!r} column {name!r} data row {start + i}") for i, v in enumerate(column.to_pylist())], dtype=np.float64
        )
    raise ValueError(f"{str(path)!r}: time column {name!r} has type {kind}; expected ISO 8601 text, a timestamp or Unix seconds")


def _table_chunks(
    path: Path,
    suffix: str,
    lon_col: str | None,
    lat_col: str | None,
    crs: str | None,
    chunk_rows: int,
    text: Sequence[str] = (),
    time_col: str | None = None,
) -> tuple[int, Iterator[Chunk]]:
    import pyarrow as pa

    schema, batches = _arrow_batches(path, suffix, chunk_rows, text=text)
    lon, lat = find_coordinate_columns(schema.names, lon_col, lat_col, crs, where=repr(str(path)))
    if lon == lat:
        raise ValueError(f"{str(path)!r}: the longitude and latitude columns are both {lon!r}; name two columns (--lon-col, --lat-col)")
    if time_col is not None and time_col not in schema.names:
        raise ValueError(f"{str(path)!r}: no time column {time_col!r} (--time-col); it has {schema.names}")

    def coordinates_must_be_numbers(change: ColumnTypeChanged) -> Exception:
        return ValueError(f"{change} (coordinates must be numbers)") if change.column in (lon, lat) else change

    try:
        total = _count_rows(path, suffix, lat)
    except ColumnTypeChanged as change:
        raise coordinates_must_be_numbers(change) from None
    if total == 0:
        raise ValueError(f"{str(path)!r}: no data rows (only a header)")

    def chunks() -> Iterator[Chunk]:
        start = 0
        try:
            for batch in batches:
                coords = [_column(batch, lon, path), _column(batch, lat, path)]
                if time_col is not None:
                    coords.append(_time_column(batch, time_col, path, start))
                lonlat = np.stack(coords, axis=1)
                carried = pa.Table.from_batches([batch]).drop_columns([lon, lat])
                yield start, lonlat, carried
                start += batch.num_rows
        except ColumnTypeChanged as change:
            raise coordinates_must_be_numbers(change) from None

    return total, chunks()


def read_chunks(
    path: str | Path,
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
    suffix = _suffix(path, INPUT_FORMATS, "input")
    if not path.is_file():
        raise FileNotFoundError(f"input {str(path)!r}: no such file")
    if suffix == ".npy":
        if time_col is not None:
            raise ValueError(f"input {str(path)!r}: --time-col names a table column; an .npy input holds the time as a third column")
        return _npy_chunks(path, chunk_rows)
    return _table_chunks(path, suffix, lon_col, lat_col, crs, chunk_rows, text, time_col)


# ---------------------------------------------------------------------------------------- writers


class NpyWriter:
    """Writes rows in place into an ``.npy`` created with the final shape (``open_memmap``), through a plain file handle."""

    def __init__(self, path: Path, rows: int, dim: int, dtype: np.dtype) -> None:
        created = np.lib.format.open_memmap(path, mode="w+", dtype=dtype, shape=(rows, dim))
        self.offset, self.row_bytes = created.offset, dim * np.dtype(dtype).itemsize
        del created
        self.dtype = np.dtype(dtype)
        self.file = open(path, "r+b")

    def write(self, start: int, emb: np.ndarray, carried: Any, lonlat: np.ndarray | None = None) -> None:
        self.file.seek(self.offset + start * self.row_bytes)
        self.file.write(np.ascontiguousarray(emb, dtype=self.dtype).tobytes())

    def close(self) -> None:
        self.file.close()


class TableWriter:
    """Appends carried columns + ``emb_*`` columns to a Parquet file (row groups) or a CSV file.

    ``geoparquet`` (Parquet only) adds a WKB ``geometry`` point column and GeoParquet ``geo``
    metadata (:mod:`.geoparquet`) after the carried columns.
    """

    def __init__(self, path: Path, fmt: str, dim: int, geoparquet: bool = False) -> None:
        self.path, self.fmt, self.dim = path, fmt, dim
        self.names = [f"emb_{i}" for i in range(dim)]
        self.writer: Any = None
        self.schema: Any = None
        self.bbox = BBox() if geoparquet else None

    def _table(self, emb: np.ndarray, carried: Any, lonlat: np.ndarray | None) -> Any:
        import pyarrow as pa

        table = carried if carried is not None else pa.table({})
        names = self.names if self.bbox is None else [GEOMETRY, *self.names]
        clash = sorted(set(table.column_names) & set(names))
        if clash:
            raise ValueError(f"input columns {clash} clash with the output columns ({', '.join(names[:2])}, ..., emb_{self.dim - 1})")
        arrays = [pa.array(emb[:, i]) for i in range(self.dim)]
        if self.bbox is not None:
            if lonlat is None:
                raise ValueError("--geoparquet needs the coordinates of each chunk")
            lonlat = np.stack([wrap_longitude(torch.from_numpy(lonlat[:, 0])).numpy(), lonlat[:, 1]], axis=1)
            self.bbox.update(lonlat)
            arrays.insert(0, wkb_points(lonlat))
        return pa.Table.from_arrays([*table.columns, *arrays], names=[*table.column_names, *names])

    def write(self, start: int, emb: np.ndarray, carried: Any, lonlat: np.ndarray | None = None) -> None:
        table = self._table(emb, carried, lonlat)
        if self.writer is None:
            self.schema = table.schema
            if self.fmt == ".parquet":
                import pyarrow.parquet as pq

                self.writer = pq.ParquetWriter(self.path, table.schema)
            else:
                import pyarrow.csv as pacsv

                self.writer = pacsv.CSVWriter(self.path, table.schema)
        elif not table.schema.equals(self.schema):
            table = table.cast(self.schema)
        self.writer.write_table(table)

    def close(self) -> None:
        if self.writer is not None:
            if self.bbox is not None:
                self.writer.add_key_value_metadata({"geo": json.dumps(geo_metadata(self.bbox.value()))})
            self.writer.close()


# ---------------------------------------------------------------------------------------- embedding


def check_device(device: str) -> None:
    """Raise ``ValueError`` when ``device`` cannot hold a tensor here (no driver, not built in, unknown)."""
    try:
        torch.empty(1, device=device)
    except (RuntimeError, AssertionError, NotImplementedError) as err:
        lines = str(err).strip().splitlines()
        raise ValueError(f"--device {device}: not available here ({lines[0] if lines else type(err).__name__}); use --device cpu") from None


def embed_array(
    encoder: LocationEncoder, lonlat: np.ndarray, batch_size: int = 8192, device: str | torch.device = "cpu", dtype: np.dtype | type | None = None
) -> np.ndarray:
    """(n, 2) [lon, lat] degrees -> (n, output_dim) embeddings, ``batch_size`` rows at a time: the one
    batched-embedding loop (files, grids, geolocation, probes and plots all use it).

    The tower is put in eval mode (embedding is inference: no dropout, no time dropout). Output in
    ``dtype`` (default: the encoder's). A time-aware tower takes (n, 3) [lon, lat, t]; given (n, 2) it
    embeds with every time unknown (NaN). A static tower given (n, 3) raises ``ValueError``."""
    if lonlat.shape[1:] == (3,) and not encoder.takes_time:
        raise ValueError("the location tower takes no time (a static tower): give (N, 2) [lon, lat]; (N, 3) [lon, lat, t] is the input of a time-aware tower")
    if encoder.takes_time and lonlat.shape[1:] == (2,):
        lonlat = np.concatenate([lonlat, np.full((lonlat.shape[0], 1), np.nan)], axis=1)
    if dtype is None:
        dtype = torch.empty((), dtype=encoder.dtype).numpy().dtype
    out = np.empty((lonlat.shape[0], encoder.output_dim), dtype=dtype)
    encoder.eval()
    with torch.inference_mode():
        for i in range(0, lonlat.shape[0], batch_size):
            batch = torch.from_numpy(np.ascontiguousarray(lonlat[i : i + batch_size], dtype=np.float64)).to(device)
            # torch's copy runs on all torch threads (numpy's is serial): the result's first touch, its
            # page faults, is a sixth of a float64 L = 10 tower's time and would not scale otherwise
            torch.from_numpy(out[i : i + batch_size]).copy_(encoder(batch))
    return out


@requires_extra("embedding a CSV or Parquet file")
def embed_file(
    encoder: LocationEncoder,
    input: str | Path,
    output: str | Path,
    lon_col: str | None = None,
    lat_col: str | None = None,
    batch_size: int = 8192,
    device: str | torch.device = "cpu",
    progress: bool = True,
    crs: str | None = None,
    geoparquet: bool = False,
    time_col: str | None = None,
) -> int:
    """Embed every row of ``input`` into ``output`` (streaming, order kept); returns the number of rows.

    ``geoparquet`` (``.parquet`` output only) adds a WKB point ``geometry`` column and GeoParquet metadata.
    ``time_col``: the acquisition-time column for a time-aware tower (module docstring).

    A carried CSV column whose values stop fitting the type inferred from the first rows (an id that
    turns from numbers to text) is read as text: the file is read again from the start."""
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    if time_col is not None and not encoder.takes_time:
        raise ValueError(f"--time-col {time_col!r}: this location tower takes no time (a static tower); leave --time-col out")
    text: list[str] = []
    while True:
        try:
            return _embed_once(encoder, Path(input), Path(output), lon_col, lat_col, crs, batch_size, device, progress, text, geoparquet, time_col)
        except ColumnTypeChanged as change:  # a carried column (read_chunks reports coordinate columns itself)
            if change.column in text:
                raise ValueError(str(change)) from None
            text.append(change.column)


def _embed_once(
    encoder: LocationEncoder,
    input: Path,
    output: Path,
    lon_col: str | None,
    lat_col: str | None,
    crs: str | None,
    batch_size: int,
    device: str | torch.device,
    progress: bool,
    text: Sequence[str],
    geoparquet: bool = False,
    time_col: str | None = None,
) -> int:
    from tqdm import tqdm

    out_fmt = _suffix(output, OUTPUT_FORMATS, "output")
    if geoparquet and out_fmt != ".parquet":
        raise ValueError(f"output {str(output)!r}: --geoparquet writes Parquet; name the output .parquet")
    rows, chunks = read_chunks(input, lon_col, lat_col, chunk_rows=max(batch_size, READ_ROWS), crs=crs, text=text, time_col=time_col)
    encoder = encoder.to(device).eval()
    dim, dtype = encoder.output_dim, torch.empty((), dtype=encoder.dtype).numpy().dtype
    output.parent.mkdir(parents=True, exist_ok=True)
    partial = output.with_name(output.name + ".partial")
    writer = NpyWriter(partial, rows, dim, dtype) if out_fmt == ".npy" else TableWriter(partial, out_fmt, dim, geoparquet)
    done = 0
    try:
        with tqdm(total=rows, unit="pt", unit_scale=True, desc=f"embed {input.name}", disable=not progress) as bar:
            for start, lonlat, carried in chunks:
                check_coordinates(lonlat, start, repr(str(input)))
                writer.write(start, embed_array(encoder, lonlat, batch_size, device), carried, lonlat)
                done += lonlat.shape[0]
                bar.update(lonlat.shape[0])
        writer.close()
    except BaseException:
        writer.close()
        partial.unlink(missing_ok=True)
        raise
    if done != rows:
        partial.unlink(missing_ok=True)
        raise RuntimeError(f"{str(input)!r}: read {done} rows but expected {rows}")
    os.replace(partial, output)
    return done


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--checkpoint", required=True, help="checkpoint file, hub id (microsoft/SatCLIP-ResNet18-L10), https URL or export directory")
    parser.add_argument("--input", required=True, help="coordinates: .csv / .parquet with longitude and latitude columns, or an (N, 2) [lon, lat] .npy")
    parser.add_argument("--output", required=True, help="embeddings: .npy (N, D), or .parquet / .csv (carried columns + emb_0..emb_{D-1})")
    add_coordinate_arguments(parser)
    parser.add_argument(
        "--time-col", default=None, help="acquisition-time column for a time-aware tower: ISO 8601 text, timestamps or Unix seconds (default: time unknown)"
    )
    parser.add_argument("--batch-size", type=int, default=8192, help="points per forward pass (default: 8192)")
    parser.add_argument("--device", default="cpu", help="cpu or cuda (default: cpu)")
    parser.add_argument("--dtype", choices=("float32", "float64"), default=None, help="precision of the tower and output (default: the checkpoint's)")
    parser.add_argument("--dim", type=int, default=None, help="keep the first DIM embedding dimensions (for Matryoshka-trained towers; see docs/matryoshka.md)")
    parser.add_argument("--geoparquet", action="store_true", help="(.parquet output) add a WKB point 'geometry' column and GeoParquet metadata")
    add_progress_argument(parser)


def run(args: argparse.Namespace) -> int:
    check_device(args.device)
    # SIGTERM (kill, a scheduler) unwinds like Ctrl-C, so the partial output is removed
    previous = signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))
    try:
        encoder = load_location_encoder(args.checkpoint, device=args.device, dtype=args.dtype, dim=args.dim)
        if encoder.takes_time and args.time_col is None and not str(args.input).lower().endswith(".npy"):
            print("satclip embed: a time-aware tower and no --time-col: every time is unknown (time-free embeddings)", file=sys.stderr)
        rows = embed_file(
            encoder,
            args.input,
            args.output,
            args.lon_col,
            args.lat_col,
            args.batch_size,
            args.device,
            not args.no_progress,
            args.crs,
            args.geoparquet,
            args.time_col,
        )
    finally:
        signal.signal(signal.SIGTERM, previous)
    print(f"wrote {rows} embeddings ({encoder.output_dim} dims, {str(encoder.dtype).removeprefix('torch.')}) to {args.output}")
    return 0
