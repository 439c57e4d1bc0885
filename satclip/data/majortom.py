"""Major TOM Core-S2L2A / Core-S2L1C Parquet parts -> cells -> patches for ``satclip shards``.

A part (``images/part_NNNNN.parquet``) holds one row per grid cell and product, one row per row
group as published: ``product_id``, ``grid_cell``, ``product_datetime`` (text), ``thumbnail`` (PNG),
one binary column per band (``B01`` .. ``B12``, ``B8A``; ``B10`` in L1C only), each a single-band
GeoTIFF at the band's own resolution (10, 20 or 60 m over the same 1,068 x 1,068 px 10 m cell),
and ``cloud_mask`` (a 10 m GeoTIFF). Row groups are read one at a time (the parts are ~4-5 GB), all
of a part's or those selected on the metadata index; a part may be a URL (range requests).

Each cell is brought to the 10 m grid by nearest-neighbour replication (a 20 m pixel becomes 2 x 2
identical 10 m pixels, a 60 m one 6 x 6): every output value is a stored input value, so patches
stay bit-exact against the source, and the 10 m pixel grid of a coarser band coincides with the
cell's (Sentinel-2's 20 and 60 m grids are aligned on the 10 m one). The cell is cut into
``patch_size`` squares, floor(H / size) x floor(W / size), centred in the cell (the remainder,
e.g. 44 px of 1,068 at 256, is dropped, half on each side); each patch's centre lon/lat comes from
the 10 m band's georeference. With ``max_cloud``, a patch whose fraction of non-zero cloud-mask
pixels is above it is left out and counted (``filtered`` ``cloud``).

A corrupt row is skipped and counted by kind, never fatal: ``band_missing`` (a band or, with
``max_cloud``, the cloud mask is null or empty), ``band_decode`` (its GeoTIFF bytes do not decode,
e.g. truncated), ``small_cell`` (the finest band is smaller than a patch), ``band_grid`` (a band's
size, CRS, origin or dtype does not fit the 10 m grid), ``datetime`` (``product_datetime`` does not
parse, or is a number: never guessed to be Unix seconds), ``georeference`` (no CRS/transform, or a centre that is not a valid lon/lat), ``duplicate``
(a ``grid_cell`` and ``product_id`` an earlier row, in any part, already gave: the first is kept).
"""

from __future__ import annotations

import dataclasses
import itertools
import math
import os
import re
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..acqtime import parse_time
from ..extras import requires_extra
from ..geo import valid_lonlat
from . import cellselect, remote
from .bands import S2_BANDS_13
from .cellselect import CellFilters, PartRows
from .partition import Units
from .sources import Collected, Encoded, FolderUrl, Location, Reader, ReadOptions, ShardInputError, payload_bytes, sample_key, sample_record

META_COLUMNS = ("product_id", "grid_cell", "product_datetime")
CLOUD_MASK = "cloud_mask"
METADATA_FILE = "metadata.parquet"
"""The index beside the parts (grid cell, centre, cloud cover, ... per row): read to select rows
before reading them (:mod:`satclip.data.cellselect`); each patch's coordinates still come from its
own georeference and the time from the row."""


def is_majortom(location: str | Path) -> bool:
    """A Parquet part with Major TOM's columns (checked from the schema, nothing else read; a URL:
    only its footer is fetched)."""
    if remote.is_url(location):
        if not str(location).endswith(".parquet") or remote.name_of(location) == METADATA_FILE:
            return False
        with remote.parquet_file(str(location)) as parquet, remote.reading(location):
            return set(META_COLUMNS) <= set(parquet.schema_arrow.names)
    path = Path(location)
    return path.is_file() and path.suffix == ".parquet" and path.name != METADATA_FILE and not_a_part(path) is None


def not_a_part(path: Path) -> str | None:
    """Why the local ``.parquet`` file ``path`` is no Major TOM part (None when it is one): not
    Parquet at all, or missing columns (from the schema, nothing else read)."""
    with requires_extra("satclip shards of Major TOM Parquet"):
        import pyarrow.parquet as pq
    try:
        names = pq.read_schema(path).names
    except Exception as err:  # noqa: BLE001 - ArrowInvalid, OSError: say what it is, the caller names the file
        return f"not a readable Parquet file ({type(err).__name__}: {err})"
    missing = [c for c in META_COLUMNS if c not in names]
    return f"a Parquet file without Major TOM's column(s) {missing} (it has {names[:8]}{' ...' if len(names) > 8 else ''})" if missing else None


def parts_in(root: Path) -> list[Path]:
    """The Major TOM parts in a folder (itself or its ``images/``), sorted; [] when there are none."""
    folders = [root / "images", root] if (root / "images").is_dir() else [root]
    return sorted(p for folder in folders for p in folder.glob("*.parquet") if is_majortom(p))


def source_bands(where: str, names: Sequence[str], *, bands: Sequence[str] | None) -> tuple[str, ...]:
    """The bands to read from a part with columns ``names``: ``bands``, each a column of it, or every
    band column it has in the 13-band order (12 for L2A, 13 with B10 for L1C)."""
    names = list(names)
    if bands is None:
        found = tuple(b for b in S2_BANDS_13 if b in names)
        if not found:
            raise ShardInputError(f"{where}: no band columns ({', '.join(S2_BANDS_13)}) among {names}")
        return found
    missing = [b for b in bands if b not in names]
    if missing:
        raise ShardInputError(f"{where}: no column(s) {missing} for --bands; its columns are {names}")
    return tuple(bands)


def count_rows(parts: Sequence[PartRows]) -> int:
    """Rows to read: the selected row groups' (one row each, as published), else every row of a part."""
    total = 0
    for part in parts:
        if part.row_groups is not None:
            total += len(part.row_groups)
        else:
            with remote.parquet_file(part.location) as parquet, remote.reading(part.location):
                total += parquet.metadata.num_rows
    return total


@dataclass(frozen=True)
class CellTask:
    """One Major TOM row: its band GeoTIFF bytes (None = null), to be cut into patches."""

    source: str
    product_id: str
    grid_cell: str
    datetime: str | None
    bands: tuple[str, ...]
    data: tuple[bytes | None, ...]
    cloud_mask: bytes | None
    patch_size: int = 256
    max_cloud: float | None = None
    duplicate_of: str | None = None
    """The row that already gave this ``grid_cell`` and ``product_id`` (then ``data`` is empty)."""

    def encode(self, payload: str, bands: tuple[str, ...] | None) -> Encoded:
        return encode_cell(self, payload)


def cell_tasks(parts: Sequence[PartRows], bands: Sequence[str] | None, *, patch_size: int, max_cloud: float | None, skip: int = 0) -> Iterator[CellTask]:
    """Tasks streamed row group by row group from the parts (each path or URL, all its row groups
    or the selected ones), in the given order; a URL's part is fetched by range requests. The first
    ``skip`` tasks are left out without reading their row groups (a resumed run)."""
    first: tuple[str, ...] | None = None
    seen: dict[tuple[str, str], str] = {}  # (grid_cell, product_id) -> the row that gave it, skipped rows too
    for part in parts:
        name = remote.name_of(part.location)
        try:
            with remote.parquet_file(part.location) as parquet, remote.reading(part.location):
                names = source_bands(str(part.location), parquet.schema_arrow.names, bands=bands)
                if first is None:
                    first = names
                elif names != first:
                    raise ShardInputError(f"{part.location}: bands {list(names)}, the first part has {list(first)} (one band list per shard set)")
                has_mask = CLOUD_MASK in parquet.schema_arrow.names
                columns = [*META_COLUMNS, *names, *([CLOUD_MASK] if has_mask else [])]
                starts = np.cumsum([0] + [parquet.metadata.row_group(g).num_rows for g in range(parquet.num_row_groups)])
                groups = range(parquet.num_row_groups) if part.row_groups is None else part.row_groups
                for group in groups:
                    if not 0 <= group < parquet.num_row_groups:
                        raise ShardInputError(f"{part.location}: no row group {group} (the index's parquet_row); it has {parquet.num_row_groups}")
                    rows = int(starts[group + 1] - starts[group])
                    if skip >= rows:
                        skip -= rows
                        for i, key in enumerate(_group_keys(parquet, group)):
                            seen.setdefault(key, f"{name}:row {int(starts[group]) + i}")
                        continue
                    table = parquet.read_row_group(group, columns=columns)
                    values = {column: table.column(column).to_pylist() for column in columns}
                    done, skip = skip, 0
                    for i in range(table.num_rows):
                        source, cell, product = f"{name}:row {int(starts[group]) + i}", str(values["grid_cell"][i]), str(values["product_id"][i])
                        earlier = seen.setdefault((cell, product), source)
                        if i < done:
                            continue
                        fresh = earlier == source
                        yield CellTask(
                            source=source,
                            product_id=product,
                            grid_cell=cell,
                            datetime=values["product_datetime"][i],
                            bands=names,
                            data=tuple(values[b][i] for b in names) if fresh else (),
                            cloud_mask=values[CLOUD_MASK][i] if has_mask and fresh else None,
                            patch_size=patch_size,
                            max_cloud=max_cloud,
                            duplicate_of=None if fresh else earlier,
                        )
        except OSError as err:  # a local part: pyarrow's ArrowInvalid / ArrowIOError derive from it
            raise ShardInputError(f"{part.location}: not a readable Parquet file ({type(err).__name__}: {err})") from err


def _group_keys(parquet, group: int) -> list[tuple[str, str]]:
    """(grid_cell, product_id) of each row of a row group that a resumed run skips, for the duplicate
    check: from the footer's statistics when it holds one row (as published, nothing fetched), else
    from those two columns only."""
    meta = parquet.metadata.row_group(group)
    paths = [meta.column(c).path_in_schema for c in range(meta.num_columns)]
    if meta.num_rows == 1 and {"grid_cell", "product_id"} <= set(paths):
        stats = [meta.column(paths.index(c)).statistics for c in ("grid_cell", "product_id")]
        if all(s is not None and s.has_min_max and s.min == s.max for s in stats):
            return [(str(stats[0].min), str(stats[1].min))]
    table = parquet.read_row_groups([group], columns=["grid_cell", "product_id"])
    return list(zip(map(str, table.column("grid_cell").to_pylist()), map(str, table.column("product_id").to_pylist())))


class _RowSkip(Exception):
    def __init__(self, kind: str, cause: str) -> None:
        super().__init__(cause)
        self.kind = kind


def _read_band(name: str, data: bytes | None):
    """(array (H, W), crs, transform) of one band's GeoTIFF bytes; raises _RowSkip."""
    from rasterio.io import MemoryFile

    if not data:
        raise _RowSkip("band_missing", f"{name} is {'null' if data is None else 'empty'}")
    try:
        with MemoryFile(bytes(data)) as memfile, memfile.open() as dataset:
            return dataset.read(1), dataset.crs, dataset.transform
    except Exception as err:  # noqa: BLE001 - RasterioError / CPLE_* for truncated or garbage bytes
        cause = err.__cause__ or err
        raise _RowSkip("band_decode", f"{name} ({len(data)} bytes) does not decode: {cause}") from None


def _on_grid(name: str, array: np.ndarray, *, crs, transform, ref) -> int:
    """The integer factor by which band ``name`` is coarser than the 10 m reference grid ``ref``."""
    height, width, ref_crs, ref_transform, dtype = ref
    factor = width // array.shape[1] if array.shape[1] else 0
    ok = (
        factor >= 1
        and array.shape[1] * factor == width
        and array.shape[0] * factor == height
        and crs == ref_crs
        and array.dtype == dtype
        and math.isclose(transform.a, ref_transform.a * factor)
        and math.isclose(transform.e, ref_transform.e * factor)
        and transform.b == ref_transform.b == 0
        and transform.d == ref_transform.d == 0
        and math.isclose(transform.c, ref_transform.c, abs_tol=1e-6)
        and math.isclose(transform.f, ref_transform.f, abs_tol=1e-6)
    )
    if not ok:
        raise _RowSkip(
            "band_grid",
            f"{name}: {array.shape[0]}x{array.shape[1]} {array.dtype} {transform!r} does not fit the "
            f"10 m grid {height}x{width} {dtype} {ref_transform!r} ({ref_crs})",
        )
    return factor


def to_10m(array: np.ndarray, factor: int, *, out: np.ndarray | None = None) -> np.ndarray:
    """Nearest-neighbour replication of a coarser band onto the 10 m grid (values unchanged), into
    ``out`` when given. Each row is widened once, then copied into its ``factor`` rows (2-4x faster
    than repeating along both axes, measured)."""
    height, width = array.shape
    if out is None:
        if factor == 1:
            return array
        out = np.empty((height * factor, width * factor), array.dtype)
    if factor == 1:
        out[...] = array
    else:
        out.reshape(height, factor, width * factor)[...] = np.repeat(array, factor, axis=1)[:, None, :]
    return out


def patch_offsets(height: int, width: int, *, size: int) -> list[tuple[int, int]]:
    """Top-left (row, col) of each patch, row-major: floor(H/size) x floor(W/size), centred."""
    top, left = (height - height // size * size) // 2, (width - width // size * size) // 2
    return [(top + i * size, left + j * size) for i in range(height // size) for j in range(width // size)]


def _product_seconds(value: object) -> float:
    """``product_datetime`` as Unix seconds; raises _RowSkip for text that does not parse and for a
    number (Major TOM stores text: ``20200902`` or an int64 column is no Unix time to guess at)."""
    text = "" if value is None else str(value).strip()
    if re.fullmatch(r"[+-]?\d+(\.\d*)?", text):
        raise _RowSkip("datetime", f"product_datetime {value!r} is a number, not a date-time such as 20200902T101031 (numbers are not read as Unix seconds)")
    try:
        return parse_time(text, "product_datetime")
    except ValueError as err:
        raise _RowSkip("datetime", str(err)) from None


def _cell(task: CellTask):
    """The cell on the 10 m grid (C, H, W), its crs, transform, time and cloud mask; raises _RowSkip."""
    import rasterio
    from rasterio.crs import CRS

    seconds = _product_seconds(task.datetime)
    with rasterio.Env():  # one GDAL environment for the row's bands (else one is set up and torn down per band)
        reads = [(name, *_read_band(name, data)) for name, data in zip(task.bands, task.data)]
    finest = max(reads, key=lambda r: r[1].shape[1])
    _, ref_array, crs, transform = finest
    if min(ref_array.shape) < task.patch_size:  # before the grid checks: a small cell's coarse bands do not fit it either
        raise _RowSkip("small_cell", f"the cell is {ref_array.shape[0]}x{ref_array.shape[1]} px at 10 m, smaller than a {task.patch_size} px patch")
    if not isinstance(crs, CRS) or transform.is_identity:
        raise _RowSkip("georeference", f"{finest[0]} has no georeference (CRS {crs}, transform {tuple(transform)[:6]})")
    ref = (*ref_array.shape, crs, transform, ref_array.dtype)
    cell = np.empty((len(reads), *ref_array.shape), dtype=ref_array.dtype)
    for c, (name, array, band_crs, band_transform) in enumerate(reads):
        to_10m(array, _on_grid(name, array, crs=band_crs, transform=band_transform, ref=ref), out=cell[c])
    mask = None
    if task.max_cloud is not None:
        mask_array, mask_crs, mask_transform = _read_band(CLOUD_MASK, task.cloud_mask)
        ref_mask = (*ref_array.shape, crs, transform, mask_array.dtype)
        mask = to_10m(mask_array, _on_grid(CLOUD_MASK, mask_array, crs=mask_crs, transform=mask_transform, ref=ref_mask)) != 0
    return cell, crs, transform, seconds, mask


def encode_cell(task: CellTask, payload: str) -> Encoded:
    """Cut one Major TOM row into checked patch samples; a corrupt row gives a counted skip."""
    from ..geo import lonlat_of_pixels

    if task.duplicate_of is not None:
        return Encoded.skip(
            "duplicate", task.source, cause=f"grid_cell {task.grid_cell!r} with product_id {task.product_id!r} was already read at {task.duplicate_of}"
        )
    try:
        cell, crs, transform, seconds, mask = _cell(task)
    except _RowSkip as skip:
        return Encoded.skip(skip.kind, task.source, cause=str(skip))
    size = task.patch_size
    offsets = patch_offsets(cell.shape[1], cell.shape[2], size=size)
    lons, lats = lonlat_of_pixels(crs, transform, cols=[c + size / 2 for _, c in offsets], rows=[r + size / 2 for r, _ in offsets])
    out = Encoded()
    crs_text = crs.to_string()
    for (top, left), lon, lat in zip(offsets, lons, lats):
        where = f"{task.source} patch ({top}, {left})"
        if not valid_lonlat(lon, lat):
            out.skipped.append(("georeference", where, f"centre lon={lon}, lat={lat} is not a valid coordinate"))
            continue
        extra: dict[str, object] = {"cell": task.grid_cell, "product_id": task.product_id, "offset": [top, left]}
        if mask is not None:
            cloud = float(mask[top : top + size, left : left + size].mean())
            if cloud > float(task.max_cloud):  # type: ignore[arg-type]  # set whenever the mask is read
                out.filtered["cloud"] = out.filtered.get("cloud", 0) + 1
                continue
            extra["cloud"] = round(cloud, 6)
        patch = np.ascontiguousarray(cell[:, top : top + size, left : left + size])
        key = sample_key(f"{task.grid_cell}_{task.product_id}_{top}_{left}")
        record = sample_record(lon, lat, seconds=seconds, source=where, crs=crs_text, bands=task.bands, array=patch, **extra)
        out.samples.append((key, payload_bytes(patch, payload, source=task.source), record))
    return out


def _selected_parts(given: Sequence[Location], root: str | None, *, index: Location | None, filters: CellFilters) -> tuple[list[PartRows], dict | None]:
    """The parts (and row groups) to read and the manifest's selection record (None: no selection,
    every row of ``given``). ``root``: a remote dataset folder (parts in its ``images/``); ``given``:
    the parts themselves; neither: ``index`` is the input and names the parts (``parquet_url``)."""
    metadata = index if index is not None else (remote.join(root, METADATA_FILE) if root is not None else None)
    if root is None and given and not filters.given():
        return [PartRows(str(p)) for p in given], None
    if metadata is None:
        raise ShardInputError(
            "selecting Major TOM rows (--bbox, --region, --start/--end, --max-cloud-cover, --cells, --sample) needs its metadata.parquet: give the dataset folder or --index"
        )
    if root is not None:
        part_location: Callable[[str], str | None] = lambda url: remote.join(root, "images", remote.name_of(url))  # noqa: E731
    elif given:
        by_name = {remote.name_of(p): str(p) for p in given}
        part_location = lambda url: by_name.get(remote.name_of(url))  # noqa: E731
    else:
        base = str(metadata)[: -len(METADATA_FILE)]
        part_location = lambda url: url if remote.is_url(url) or os.path.isabs(url) else base + url  # noqa: E731
    parts, record = cellselect.select(metadata, filters, part_location=part_location)
    if not parts:
        raise ShardInputError(f"the selection keeps no row of {metadata} (rows: {record['rows_in_index']}, after each filter: {record['rows_after']})")
    return parts, record


def _rows(tasks_from: Callable[[int], Iterable], start: int, *, stop: int, selection: dict | None) -> Collected:
    """Rows ``[start, stop)``; ``tasks_from(n)``: the tasks after the first n rows, which it skips without reading them."""
    n = stop - start
    return Collected(
        itertools.islice(tasks_from(start), n),
        n,
        "cell",
        2,
        selection,
        lambda done: itertools.islice(tasks_from(start + done), n - done),
    )


class MajorTomReader(Reader):
    """Major TOM parts (files), the dataset folder (local or a URL) or its ``metadata.parquet``, split by row."""

    name = f"Major TOM Parquet parts or its {METADATA_FILE}"
    suffixes = (".parquet",)
    in_folder_url = f"Major TOM {METADATA_FILE}"
    selects_rows = True

    def whole(self, location: Location, options: ReadOptions) -> Collected | None:
        if isinstance(location, FolderUrl):
            metadata = remote.join(location, METADATA_FILE)
            if options.filters.given() or (remote.exists(metadata) and cellselect.is_index(metadata)):
                return self._collected(_selected_parts([], location, index=options.index, filters=options.filters), options)
            return None
        if remote.name_of(location) == METADATA_FILE and options.index is None:
            return self._collected(_selected_parts([], None, index=location, filters=options.filters), options)
        parts = parts_in(location) if isinstance(location, Path) and location.is_dir() else []
        if not parts:
            return None
        index = options.index
        if index is None and (Path(location) / METADATA_FILE).is_file():
            index = Path(location) / METADATA_FILE
        return self._collected(_selected_parts(parts, None, index=index, filters=options.filters), options)

    def detect(self, location: Location) -> bool:
        return is_majortom(location)

    def collect(self, inputs: Sequence[Location], options: ReadOptions) -> Collected:
        return self._collected(_selected_parts(inputs, None, index=options.index, filters=options.filters), options)

    def why_not(self, location: Location) -> str | None:
        if not isinstance(location, Path):
            return None
        if location.is_file():
            return not_a_part(location) if location.suffix == ".parquet" else None
        found = sorted(p for folder in (location, location / "images") if folder.is_dir() for p in folder.glob("*.parquet") if p.name != METADATA_FILE)
        return f"{len(found)} .parquet file(s) but no Major TOM part; {found[0]} is {not_a_part(found[0])}" if found else None

    @staticmethod
    def _collected(selected: tuple[list[PartRows], dict | None], options: ReadOptions) -> Collected:
        parts, selection = selected
        if options.max_cloud is not None and not 0 <= options.max_cloud <= 1:
            raise ShardInputError(f"--max-cloud is a fraction of a patch's pixels, 0 to 1; got {options.max_cloud}")
        tasks_from = lambda skip: cell_tasks(parts, options.bands, patch_size=options.patch_size, max_cloud=options.max_cloud, skip=skip)  # noqa: E731
        rows = count_rows(parts)
        return dataclasses.replace(
            _rows(tasks_from, 0, stop=rows, selection=selection), units=Units("cells", rows, lambda a, b: _rows(tasks_from, a, stop=b, selection=selection))
        )


READER = MajorTomReader()

__all__ = [
    "READER",
    "MajorTomReader",
    "CellTask",
    "cell_tasks",
    "count_rows",
    "encode_cell",
    "is_majortom",
    "not_a_part",
    "parts_in",
    "patch_offsets",
    "source_bands",
    "to_10m",
]
