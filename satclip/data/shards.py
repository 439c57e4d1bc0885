"""``satclip shards``: write WebDataset shards of Sentinel-2 patches with their coordinates and time.

Inputs, detected from what is given (docs/data.md has the schemas and what was verified):

- an S2-100K folder: an index (``index.csv``, or ``metadata.parquet`` as S2-100K is published now;
  columns ``fn``, ``lon``, ``lat`` in any order, an optional acquisition-time column (``time``,
  ``datetime``, ``timestamp``, ...: it wins over the GeoTIFF's tags), extra columns ignored) and
  ``images/patch_N.tif``;
  ``--index`` names an index kept elsewhere;
- a folder of GeoTIFFs without an index: each patch's centre (lon, lat) comes from its own
  georeference (:func:`satclip.geo.lonlat_from_georeference`);
- S2-100K tar shards as published (tars of ``patch_N.tif``, members possibly under ``images/``),
  as files or a folder of them, with ``--index`` (without it: the folder's ``index.csv`` or
  ``metadata.parquet``, else coordinates from georeference);
- Major TOM Core-S2L2A / Core-S2L1C Parquet parts (files, or a folder with ``images/*.parquet``):
  each cell cut into ``--patch-size`` patches (:mod:`satclip.data.majortom`);
- SSL4EO-S12 v1.1 ``*.zarr.zip`` files (files or a folder): one sample per location and timestamp
  (:mod:`satclip.data.ssl4eo`).

All but the GeoTIFF folders may be URLs (:mod:`satclip.data.remote`); Major TOM rows may be selected
on its ``metadata.parquet`` before reading (:mod:`satclip.data.cellselect`).

Output, in ``--out``: ``shard-000000.tar``, ... each sample holding ``__key__`` (the file stem,
e.g. ``patch_N``), the image under its payload extension (``tif``: original bytes; ``s2c``: see
:mod:`satclip.data.payload`) and ``json`` = {lon, lat, time, doy, source, crs, bands, shape, dtype}
(``time``/``doy`` when the source has the acquisition time, :func:`satclip.acqtime.time_record`);
and ``manifest.json`` = {format, version, payload, dtype, bands, shards: [{name, samples}], samples,
with_time, skipped, filtered[, selection]} (``selection``: what was chosen on a Major TOM index, and
how). Every image is decoded once while writing, so a shard set never holds an unreadable sample.
A corrupt GeoTIFF stops the run naming it; a corrupt Major TOM row or SSL4EO timestamp is skipped
and counted by kind (``skipped``), patches over ``--max-cloud`` are counted in ``filtered``. Output
is deterministic: the same inputs give byte-identical shards for any ``--workers``, and a killed
run resumes to the same bytes (:mod:`satclip.data.resume`).
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import io
import itertools
import json
import logging
import math
import os
import shutil
import sys
import tarfile
import tempfile
from collections.abc import Callable, Generator, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

from ..acqtime import parse_time
from ..cliargs import add_progress_argument
from ..columns import CoordinateColumnsError, add_coordinate_arguments, find_coordinate_columns, find_time_column
from . import cellselect, majortom, remote, resume, ssl4eo
from .cellselect import CellFilters, PartRows
from .ordered_pool import WorkerDied, ordered_map
from .payload import PAYLOAD_EXTENSIONS, decode_tif, encode_fast
from .shardlist import MANIFEST, MANIFEST_VERSION
from .sources import SHOWN_PER_KIND, Encoded, ShardInputError, WorkerDiedError, sample_record
from .transforms import S2_BANDS

MANIFEST_FORMAT = f"satclip-shards/{MANIFEST_VERSION}"
TIF_SUFFIXES = (".tif", ".tiff")
TAR_SUFFIXES = (".tar", ".tar.gz", ".tgz")
INDEX_NAMES = ("index.csv", "metadata.parquet")
"""An S2-100K folder's index, in the order looked for."""
TIME_TAGS = ("ACQUISITION_DATETIME", "DATETIME", "TIFFTAG_DATETIME")
"""GeoTIFF metadata tags read for the acquisition time, first found wins (TIFF's own tag is written
``YYYY:MM:DD HH:MM:SS``)."""
_MISSING_SHOWN = 5
T = TypeVar("T")
R = TypeVar("R")
log = logging.getLogger("satclip.data")


@dataclass(frozen=True)
class _Task:
    """One patch to write: ``data`` (bytes read from a tar) or ``path``; ``lonlat`` None = georeference."""

    key: str
    source: str
    path: str | None = None
    data: bytes | None = None
    lonlat: tuple[float, float] | None = None
    seconds: float | None = None  # from the index's time column; None or NaN: the GeoTIFF's tags

    def encode(self, payload: str, bands: tuple[str, ...] | None) -> Encoded:
        return Encoded(samples=[encode_sample(self, payload, bands or S2_BANDS)])


# ---------------------------------------------------------------------------------------------
# reading the inputs


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


def _key(relative: str) -> str:
    """Sample key of a file: its path without the suffix; dots become '_' (WebDataset splits there)."""
    stem = relative.rsplit(".", 1)[0] if "." in os.path.basename(relative) else relative
    return stem.replace(".", "_")


def _folder_tasks(root: Path, table: IndexTable | None) -> list[_Task]:
    """Tasks for an S2-100K folder (with an index) or a plain folder of GeoTIFFs (georeference)."""
    if table is None:
        files = sorted(p for p in root.rglob("*") if p.suffix.lower() in TIF_SUFFIXES and p.is_file())
        if not files:
            raise ShardInputError(f"{root}: no index.csv and no GeoTIFF (*.tif, *.tiff) files")
        return [_Task(_key(p.relative_to(root).as_posix()), p.relative_to(root).as_posix(), path=str(p)) for p in files]
    index, times = table.lonlat, table.times or {}
    tasks, missing = [], []
    for name, lonlat in index.items():
        path = next((p for p in (root / "images" / name, root / name) if p.is_file()), None)
        if path is None:
            missing.append(name)
            continue
        tasks.append(_Task(_key(name), path.relative_to(root).as_posix(), path=str(path), lonlat=lonlat, seconds=times.get(name)))
    if missing:
        raise ShardInputError(f"{root}: {len(missing)} of {len(index)} files in the index are missing under {root / 'images'}: {_first(missing)}")
    present = (p for folder in (root, root / "images") if folder.is_dir() for p in folder.iterdir())
    unlisted = sorted(p.name for p in present if p.suffix.lower() in TIF_SUFFIXES and p.is_file() and p.name not in index)
    if unlisted:
        raise ShardInputError(f"{root}: {len(unlisted)} GeoTIFFs are not in the index: {_first(unlisted)}; add them to the index or move them out")
    return tasks


def _first(names: Sequence[str]) -> str:
    return ", ".join(names[:_MISSING_SHOWN]) + (", ..." if len(names) > _MISSING_SHOWN else "")


def _open_tar(location: str | Path, stack: contextlib.ExitStack) -> tarfile.TarFile:
    """A tar (path or URL) open as a stream."""
    if not remote.is_url(location):
        return stack.enter_context(tarfile.open(location, "r|*"))
    raw = stack.enter_context(remote.open_stream(str(location)))
    stack.enter_context(remote.reading(location))
    return stack.enter_context(tarfile.open(fileobj=raw, mode="r|*"))


def _tar_tasks(tars: Sequence[str | Path], table: IndexTable | None) -> Iterator[_Task]:
    """Tasks streamed from S2-100K tar shards (paths or URLs): every ``*.tif`` member; other members are ignored."""
    for tar_path in tars:
        try:
            with contextlib.ExitStack() as stack:
                tar = _open_tar(tar_path, stack)
                for member in tar:
                    name = os.path.basename(member.name)
                    if not member.isfile() or not name.lower().endswith(TIF_SUFFIXES):
                        continue
                    lonlat, seconds = None, None
                    if table is not None:
                        if name not in table.lonlat:
                            raise ShardInputError(f"{tar_path}: member {member.name!r} is not in the index")
                        lonlat, seconds = table.lonlat[name], (table.times or {}).get(name)
                    extracted = tar.extractfile(member)
                    assert extracted is not None  # a regular file member
                    data = extracted.read()
                    yield _Task(_key(name), f"{remote.name_of(tar_path)}:{member.name}", data=data, lonlat=lonlat, seconds=seconds)
        except (tarfile.TarError, EOFError, OSError) as err:
            raise ShardInputError(f"{tar_path}: not a readable tar ({type(err).__name__}: {err})") from err


@dataclass
class Collected:
    """The tasks of the inputs (streamed where possible), their number if known cheaply, what one is."""

    tasks: Iterable
    total: int | None
    unit: str = "patch"
    in_flight: int = 16
    selection: dict | None = None
    """Major TOM: what the metadata filters selected and how (the manifest's ``selection``)."""
    after: Callable[[int], Iterable] | None = None
    """The tasks after the first n, without reading those (a resumed run); None: read and skip them."""

    def tasks_after(self, n: int) -> Iterable:
        return self.after(n) if self.after is not None and n else itertools.islice(self.tasks, n, None)


def _folder_index(root: Path) -> Path | None:
    return next((root / name for name in INDEX_NAMES if (root / name).is_file()), None)


def _majortom_parts(given: Sequence[str | Path], root: str | None, index: str | Path | None, filters: CellFilters) -> tuple[list[PartRows], dict | None]:
    """The Major TOM parts (and row groups) to read and the manifest's selection record (None: no
    selection, every row of ``given``). ``root``: a remote dataset folder (parts in its ``images/``);
    ``given``: the parts themselves; neither: ``index`` is the input and names the parts (``parquet_url``)."""
    metadata = index if index is not None else (remote.join(root, majortom.METADATA_FILE) if root is not None else None)
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
        base = str(metadata)[: -len(majortom.METADATA_FILE)]
        part_location = lambda url: url if remote.is_url(url) or os.path.isabs(url) else base + url  # noqa: E731
    parts, record = cellselect.select(metadata, filters, part_location)
    if not parts:
        raise ShardInputError(f"the selection keeps no row of {metadata} (rows: {record['rows_in_index']}, after each filter: {record['rows_after']})")
    return parts, record


def _majortom_collected(parts: list[PartRows], selection: dict | None, bands: Sequence[str] | None, patch_size: int, max_cloud: float | None) -> Collected:
    if max_cloud is not None and not 0 <= max_cloud <= 1:
        raise ShardInputError(f"--max-cloud is a fraction of a patch's pixels, 0 to 1; got {max_cloud}")
    tasks = majortom.cell_tasks(parts, bands, patch_size, max_cloud)
    after = lambda n: majortom.cell_tasks(parts, bands, patch_size, max_cloud, skip=n)  # noqa: E731
    return Collected(tasks, majortom.count_rows(parts), "cell", 2, selection, after)


def _is_remote_folder(url: str) -> bool:
    return not url.rstrip("/").endswith((".parquet", ".csv", *TIF_SUFFIXES, *TAR_SUFFIXES, ssl4eo.SUFFIX))


def _remote_folder(url: str, index: str | Path | None, filters: CellFilters) -> tuple[str, list[str], str | Path | None]:
    """What a folder URL holds: ("majortom", [], index) when its ``metadata.parquet`` is Major TOM's
    (or row selection asks for it), else ("ssl4eo", files, None) or ("tars", tars, index: given, else
    its ``index.csv`` / ``metadata.parquet``) found by listing (over HTTP(S): the server's HTML links)."""
    metadata = remote.join(url, majortom.METADATA_FILE)
    if filters.given() or (remote.exists(metadata) and cellselect.is_index(metadata)):
        return "majortom", [], index
    found = remote.glob(remote.join(url, "**", f"*{ssl4eo.SUFFIX}"))
    if found:
        return "ssl4eo", found, None
    tars = [u for u in remote.glob(remote.join(url, "data", "*")) + remote.glob(remote.join(url, "*")) if u.endswith(TAR_SUFFIXES)]
    if not tars:
        raise ShardInputError(
            f"{url}: no Major TOM metadata.parquet, SSL4EO-S12 {ssl4eo.SUFFIX} files or tars found (a server that lists no folder: give the files)"
        )
    in_data = [u for u in tars if u.startswith(remote.join(url, "data") + "/")]
    if index is None:
        index = next((remote.join(url, n) for n in INDEX_NAMES if remote.exists(remote.join(url, n))), None)
    return "tars", in_data or tars, index


def collect_tasks(
    inputs: Sequence[str | Path],
    index: str | Path | None = None,
    index_columns: dict[str, str | None] | None = None,
    bands: Sequence[str] | None = None,
    patch_size: int = 256,
    max_cloud: float | None = None,
    season: int | None = None,
    select: CellFilters | None = None,
) -> Collected:
    """Work out the input layout (module docstring) and return its tasks."""
    filters = select or CellFilters()
    filters.check()
    locations: list[str | Path] = [str(p) if remote.is_url(str(p)) else Path(p) for p in inputs]
    for p in locations:
        if isinstance(p, Path) and not p.exists():
            raise ShardInputError(f"input {p} does not exist")
    one = locations[0] if len(locations) == 1 else None
    if isinstance(one, str) and _is_remote_folder(one):
        kind, found, index = _remote_folder(one, index, filters)
        if kind == "majortom":
            return _majortom_collected(*_majortom_parts([], one, index, filters), bands, patch_size, max_cloud)
        locations = list(found)
    if one is not None and remote.name_of(one) == majortom.METADATA_FILE and index is None:
        return _majortom_collected(*_majortom_parts([], None, one, filters), bands, patch_size, max_cloud)
    paths = locations
    if isinstance(one, Path) and one.is_dir():
        root = one
        parts = majortom.parts_in(root)
        if parts:
            if index is None and (root / majortom.METADATA_FILE).is_file():
                index = root / majortom.METADATA_FILE
            return _majortom_collected(*_majortom_parts(parts, None, index, filters), bands, patch_size, max_cloud)
        if filters.given():
            raise ShardInputError(f"{root}: row selection (--bbox, --cells, ...) is for Major TOM parts; this folder has none")
        if ssl4eo.files_in(root):
            paths = list(ssl4eo.files_in(root))
        else:
            tar_dir = root / "data" if (root / "data").is_dir() and any(p.name.endswith(TAR_SUFFIXES) for p in (root / "data").iterdir()) else root
            tars = sorted(p for p in tar_dir.iterdir() if p.name.endswith(TAR_SUFFIXES))
            has_tifs = any(p.suffix.lower() in TIF_SUFFIXES for p in root.rglob("*"))
            parquet = sorted(p for folder in (root, root / "images") if folder.is_dir() for p in folder.glob("*.parquet") if p.name != majortom.METADATA_FILE)
            if parquet and not tars and not has_tifs:  # not an S2-100K folder with a Parquet index either
                raise ShardInputError(f"{root}: {len(parquet)} .parquet file(s) but no Major TOM part; {parquet[0]} is {majortom.not_a_part(parquet[0])}")
            if tars and not has_tifs:
                paths = list(tars)
                index = index if index is not None else _folder_index(root)
            else:
                index_path = Path(index) if index is not None else _folder_index(root)
                table = read_index_table(index_path, **(index_columns or {})) if index_path is not None else None
                tasks = _folder_tasks(root, table)
                return Collected(tasks, len(tasks))
    if all(majortom.is_majortom(p) for p in paths):
        return _majortom_collected(*_majortom_parts(paths, None, index, filters), bands, patch_size, max_cloud)
    if filters.given():
        raise ShardInputError("row selection (--bbox, --region, --start/--end, --max-cloud-cover, --cells, --sample) is for Major TOM parts")
    if all(ssl4eo.is_ssl4eo(p) for p in paths):
        return Collected(ssl4eo.location_tasks(paths, season), ssl4eo.count_locations(paths), "location", 4)
    not_tars = [p for p in paths if not (str(p).endswith(TAR_SUFFIXES) and (isinstance(p, str) or p.is_file()))]
    if not_tars:
        why = {p: majortom.not_a_part(p) if isinstance(p, Path) and p.is_file() and p.suffix == ".parquet" else None for p in not_tars}
        listed = "; ".join(f"{p}" + (f" ({why[p]})" if why[p] else "") for p in not_tars[:_MISSING_SHOWN])
        raise ShardInputError(
            f"expected one folder, tar files ({', '.join(TAR_SUFFIXES)}), Major TOM Parquet parts or its metadata.parquet, or SSL4EO-S12 "
            f"{ssl4eo.SUFFIX} files (paths or URLs; a GeoTIFF folder: a local path), one kind at a time; not usable: {listed}"
            f"{' ...' if len(not_tars) > _MISSING_SHOWN else ''}"
        )
    table = read_index_table(index, **(index_columns or {})) if index is not None else None
    return Collected(_tar_tasks(paths, table), None)


def time_from_tags(tags: dict[str, str], source: str) -> float:
    """Acquisition time (Unix seconds, NaN unknown) from a GeoTIFF's metadata tags (:data:`TIME_TAGS`)."""
    for tag in TIME_TAGS:
        text = tags.get(tag)
        if text:
            if len(text) >= 19 and text[4] == ":" and text[7] == ":":  # TIFF's YYYY:MM:DD HH:MM:SS
                text = f"{text[:4]}-{text[5:7]}-{text[8:]}"
            try:
                return parse_time(text, f"{source} tag {tag}")
            except ValueError as err:
                raise ShardInputError(str(err)) from None
    return math.nan


# ---------------------------------------------------------------------------------------------
# encoding one sample (runs in the worker processes)


def encode_sample(task: _Task, payload: str, bands: Sequence[str]) -> tuple[str, bytes, dict]:
    """Decode one GeoTIFF, check it, and return (key, payload bytes, JSON record)."""
    from rasterio.io import MemoryFile

    from ..geo import lonlat_from_georeference

    data = task.data if task.data is not None else Path(str(task.path)).read_bytes()
    try:
        array = decode_tif(data)
    except ValueError as err:
        raise ShardInputError(f"{task.source}: {err}") from None
    if array.shape[0] != len(bands):
        raise ShardInputError(f"{task.source}: {array.shape[0]} bands, but the band list names {len(bands)}: {list(bands)}")
    with MemoryFile(data) as memfile, memfile.open() as dataset:
        crs = dataset.crs.to_string() if dataset.crs else None
        seconds = task.seconds if task.seconds is not None and not math.isnan(task.seconds) else time_from_tags(dataset.tags(), task.source)
        if task.lonlat is None:
            try:
                lon, lat = lonlat_from_georeference(dataset)
            except ValueError as err:
                raise ShardInputError(f"{task.source}: coordinates needed from georeference: {err}") from None
        else:
            lon, lat = task.lonlat
    if not (math.isfinite(lon) and math.isfinite(lat) and abs(lat) <= 90):
        raise ShardInputError(f"{task.source}: invalid coordinates lon={lon!r}, lat={lat!r}")
    record = sample_record(lon, lat, seconds, task.source, crs, tuple(bands), array)
    blob = data if payload == "tif" else encode_fast(array)
    return task.key, blob, record


def _encode_star(job: tuple) -> Encoded:
    task, payload, bands = job
    return task.encode(payload, bands)


# ---------------------------------------------------------------------------------------------
# writing


class _TarShards:
    """Writes samples into ``shard-%06d.tar`` files of ``per_shard`` samples in ``out``."""

    def __init__(self, out: Path, per_shard: int, payload: str) -> None:
        self.out, self.per_shard, self.payload = out, per_shard, payload
        self.shards: list[dict] = []
        self.dtype: str | None = None
        self.shape: list[int] | None = None
        self.bands: list[str] | None = None
        self.with_time = 0
        self._tar: tarfile.TarFile | None = None
        self._keys: set[str] = set()

    def add(self, key: str, blob: bytes, record: dict) -> bool:
        """Write one sample; True when it completed a shard."""
        if key in self._keys:
            raise ShardInputError(f"two inputs give the same sample key {key!r} (second: {record['source']})")
        self._keys.add(key)
        if self.dtype is None:
            self.dtype, self.shape, self.bands = record["dtype"], record["shape"], record["bands"]
        elif record["bands"] != self.bands:
            raise ShardInputError(f"{record['source']}: bands {record['bands']}, the other samples have {self.bands} (one band list per shard set)")
        elif record["dtype"] != self.dtype:
            raise ShardInputError(f"{record['source']}: dtype {record['dtype']}, the other samples are {self.dtype}")
        elif record["shape"] != self.shape:
            raise ShardInputError(
                f"{record['source']}: shape {tuple(record['shape'])}, the other samples are {tuple(self.shape or ())} (one patch size per shard set)"
            )
        if self._tar is None:
            self.shards.append({"name": f"shard-{len(self.shards):06d}.tar", "samples": 0})
            self._tar = tarfile.open(self.out / self.shards[-1]["name"], "w", format=tarfile.USTAR_FORMAT)
        self._member(f"{key}.{self.payload}", blob)
        self._member(f"{key}.json", json.dumps(record, separators=(",", ":")).encode())
        self.shards[-1]["samples"] += 1
        self.with_time += "time" in record
        if self.shards[-1]["samples"] == self.per_shard:
            self._finish()
            return True
        return False

    def state(self) -> dict:
        """What :meth:`restore` needs to continue after the complete shards."""
        return {"shards": [dict(s) for s in self.shards], "dtype": self.dtype, "shape": self.shape, "bands": self.bands, "with_time": self.with_time}

    def restore(self, state: dict) -> None:
        """Continue after the complete shards of a saved :meth:`state` (their keys read back from the tars)."""
        self.shards = [dict(s) for s in state["shards"]]
        self.dtype, self.shape, self.bands, self.with_time = state["dtype"], state["shape"], state["bands"], state["with_time"]
        for shard in self.shards:
            with tarfile.open(self.out / shard["name"]) as tar:
                self._keys.update(name.rsplit(".", 1)[0] for name in tar.getnames())

    def close(self) -> None:
        if self._tar is not None:
            self._finish()

    def _member(self, name: str, data: bytes) -> None:
        info = tarfile.TarInfo(name)
        info.size, info.mode, info.mtime = len(data), 0o644, 0  # fixed metadata: reproducible shards
        assert self._tar is not None  # a shard is open
        self._tar.addfile(info, io.BytesIO(data))

    def _finish(self) -> None:
        assert self._tar is not None
        self._tar.close()
        self._tar = None


def encode_in_order(fn: Callable[[T], R], jobs: Iterable[T], workers: int, in_flight: int = 16) -> Generator[R, None, None]:
    """``map(fn, jobs)``, in ``workers`` spawned processes when > 1 (:func:`.ordered_pool.ordered_map`:
    results in input order, at most ``in_flight * workers`` jobs ahead, which bounds the bytes read
    ahead from tars). The first error, in a job, in reading ``jobs`` or a worker dying in any phase
    (:class:`~.sources.WorkerDiedError`), is raised at once, the workers killed first. Close the generator (``contextlib.closing``) when
    leaving the loop early."""
    if workers <= 1:
        yield from map(fn, jobs)
        return
    try:
        yield from ordered_map(fn, jobs, workers, in_flight)
    except WorkerDied as err:
        raise WorkerDiedError(
            f"an encoding worker process ({err.pid}) died ({err.how}) after {err.done} inputs were encoded: killed, out of memory, "
            "or a crash in the GeoTIFF reader; run with --workers 1 to find the input"
        ) from None


def _shard_set(folder: Path) -> list[Path]:
    """The shard set in ``folder``: its manifest first, then its shards."""
    if not folder.is_dir():
        return []
    manifest = [folder / MANIFEST] if (folder / MANIFEST).exists() else []
    return manifest + sorted(folder.glob("shard-*.tar"))


def _hidden_sibling(out: Path, tag: str) -> Path:
    """A new hidden folder beside ``out`` (same file system: renames between them are atomic)."""
    resolved = out.resolve()
    return Path(tempfile.mkdtemp(prefix=f".{resolved.name}.{tag}-", dir=resolved.parent))


def _check_out(out: Path, overwrite: bool) -> None:
    if out.exists() and not out.is_dir():
        raise ShardInputError(f"--out {out} is a file, not a folder")
    old = _shard_set(out)
    if old and not overwrite:
        raise ShardInputError(f"{out} already holds shards ({old[0].name}, ...); pass --overwrite to replace them")


def _commit(temp: Path, out: Path) -> None:
    """Move the complete set written in ``temp`` into ``out``. The old set goes aside first, into a
    hidden sibling (only left behind if this few-renames step is interrupted), the manifest last:
    ``out`` never lists a shard it does not hold."""
    out.mkdir(exist_ok=True)
    old = _shard_set(out)
    aside = _hidden_sibling(out, "old") if old else None
    for path in old:
        assert aside is not None
        os.replace(path, aside / path.name)
    for path in sorted(temp.iterdir(), key=lambda p: p.name == MANIFEST):
        os.replace(path, out / path.name)
    temp.rmdir()
    if aside is not None:
        shutil.rmtree(aside)


def _write_set(
    collected: Collected,
    folder: Path,
    samples_per_shard: int,
    payload: str,
    bands: tuple[str, ...] | None,
    workers: int,
    progress: bool,
    out: Path,
    run: str,
    state: dict | None,
) -> dict:
    """Encode the tasks into shards in ``folder``, saving the progress of run ``run`` after every
    complete shard and continuing a saved ``state`` (:mod:`satclip.data.resume`); return the
    manifest (``out`` names the progress bar)."""
    from tqdm import tqdm

    writer = _TarShards(folder, samples_per_shard, payload)
    first_task, first_sample, skipped, filtered = 0, 0, {}, {}
    if state is not None:
        writer.restore(state["writer"])
        first_task, first_sample, skipped, filtered = state["task"], state["sample"], dict(state["skipped"]), dict(state["filtered"])
        log.warning("satclip shards: resuming %s after %d complete shards (%d %ss done)", out, len(writer.shards), first_task, collected.unit)
    jobs = ((task, payload, bands) for task in collected.tasks_after(first_task))
    with tqdm(total=collected.total, initial=first_task, unit=collected.unit, desc=f"shards -> {out}", disable=not progress) as bar:
        with contextlib.closing(encode_in_order(_encode_star, jobs, workers, collected.in_flight)) as results:
            for task, encoded in enumerate(results, start=first_task):
                done = first_sample if task == first_task else 0
                for sample, (key, blob, record) in enumerate(encoded.samples[done:], start=done + 1):
                    if writer.add(key, blob, record):
                        saved = {"task": task, "sample": sample, "skipped": skipped, "filtered": filtered, "writer": writer.state()}
                        resume.save(folder, {"fingerprint": run, **saved})
                for kind, source, cause in encoded.skipped:
                    skipped[kind] = skipped.get(kind, 0) + 1
                    if skipped[kind] <= SHOWN_PER_KIND:
                        log.warning("satclip shards: skipped (%s) %s: %s", kind, source, cause)
                for kind, n in encoded.filtered.items():
                    filtered[kind] = filtered.get(kind, 0) + n
                bar.update()
                if skipped or filtered:
                    bar.set_postfix(samples=sum(s["samples"] for s in writer.shards), skipped=sum(skipped.values()), filtered=sum(filtered.values()))
        writer.close()
    return {
        "format": MANIFEST_FORMAT,
        "version": MANIFEST_VERSION,
        "payload": payload,
        "dtype": writer.dtype,
        "bands": writer.bands if writer.bands is not None else list(bands or S2_BANDS),
        "shards": writer.shards,
        "samples": sum(s["samples"] for s in writer.shards),
        "with_time": writer.with_time,
        "skipped": dict(sorted(skipped.items())),
        "filtered": dict(sorted(filtered.items())),
    }


def write_shards(
    inputs: Sequence[str | Path],
    out: str | Path,
    *,
    index: str | Path | None = None,
    samples_per_shard: int = 500,
    payload: str = "s2c",
    bands: Sequence[str] | None = None,
    workers: int = 1,
    overwrite: bool = False,
    progress: bool = True,
    index_columns: dict[str, str | None] | None = None,
    patch_size: int = 256,
    max_cloud: float | None = None,
    season: int | None = None,
    select: CellFilters | None = None,
) -> dict:
    """Write WebDataset shards and ``manifest.json`` into ``out``; return the manifest.

    ``bands``: the band names in file order for GeoTIFFs (default S2-100K's 12), the bands to take
    for Major TOM and SSL4EO-S12 (default all the source has). ``index_columns``: ``lon_col`` /
    ``lat_col`` / ``crs`` / ``time_col`` for :func:`read_index_table` (default: found). ``patch_size`` / ``max_cloud``:
    Major TOM cutting and cloud filter; ``season`` (1-4): SSL4EO-S12 timestamps of that quarter only;
    ``select``: Major TOM rows chosen on the metadata index before reading
    (:mod:`satclip.data.cellselect`; recorded as the manifest's ``selection``). Inputs may be URLs
    (:mod:`satclip.data.remote`).

    The set is written into the hidden sibling ``.OUT.partial`` and moved in only once complete:
    a failure leaves ``out`` (and a set it held, with ``overwrite``) as it was. A run stopped at any
    point (SIGKILL included) and started again with the same arguments continues after its last
    complete shard, to the same bytes (:mod:`satclip.data.resume`)."""
    if payload not in PAYLOAD_EXTENSIONS:
        raise ShardInputError(f"payload must be one of {PAYLOAD_EXTENSIONS}, got {payload!r}")
    if samples_per_shard < 1 or workers < 1 or patch_size < 1:
        raise ShardInputError(f"--samples-per-shard, --workers and --patch-size must be >= 1, got {samples_per_shard}, {workers} and {patch_size}")
    if season is not None and season not in (1, 2, 3, 4):
        raise ShardInputError(f"--season is a quarter of the year, 1 to 4; got {season}")
    collected = collect_tasks(inputs, index, index_columns, bands, patch_size, max_cloud, season, select)
    out = Path(out)
    _check_out(out, overwrite)
    from .. import __version__

    decides: dict[str, object] = {"inputs": list(map(str, inputs)), "index": index, "index_columns": index_columns, "samples_per_shard": samples_per_shard}
    decides |= {
        "payload": payload,
        "bands": bands,
        "patch_size": patch_size,
        "max_cloud": max_cloud,
        "season": season,
        "select": select,
        "satclip": __version__,
    }
    run = resume.fingerprint(decides)
    temp = resume.partial_folder(out)  # the old set stays in place until this one is complete
    state = resume.prepare(temp, run)
    try:
        manifest = _write_set(collected, temp, samples_per_shard, payload, tuple(bands) if bands else None, workers, progress, out, run, state)
        if not manifest["shards"]:
            counts = ", ".join(f"{k}={n}" for k, n in {**manifest["skipped"], **manifest["filtered"]}.items())
            raise ShardInputError(f"no sample written from {', '.join(map(str, inputs))}" + (f" (skipped/filtered: {counts})" if counts else ""))
        if collected.selection is not None:
            manifest["selection"] = collected.selection
        (temp / resume.PROGRESS).unlink(missing_ok=True)
        (temp / MANIFEST).write_text(json.dumps(manifest, indent=1) + "\n")
        _commit(temp, out)
    except BaseException as err:
        if resume.keep_for(err):
            log.warning("satclip shards: stopped (%s); the complete shards stay in %s: run the same command again to resume", type(err).__name__, temp)
        else:
            shutil.rmtree(temp, ignore_errors=True)
        raise
    return manifest


# ---------------------------------------------------------------------------------------------
# command line


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "inputs",
        nargs="+",
        help="an S2-100K folder (index.csv or metadata.parquet + images/), a folder of GeoTIFFs, S2-100K tar shards (files or their "
        "folder), Major TOM Core-S2L2A/L1C Parquet parts (files, the dataset folder, or its metadata.parquet), or SSL4EO-S12 v1.1 "
        "*.zarr.zip files (files or a folder); tars, Major TOM and --index may be URLs (https://, s3://, gs://, hf://datasets/...)",
    )
    parser.add_argument("--out", required=True, help="output folder for shard-NNNNNN.tar and manifest.json")
    parser.add_argument(
        "--index", help="index.csv or metadata.parquet (fn, lon, lat) when not in INPUT; for tars: else georeference; Major TOM: its metadata.parquet"
    )
    add_coordinate_arguments(parser)
    parser.add_argument("--time-col", default=None, help="the index's acquisition-time column (default: found: time, datetime, timestamp, date, ...)")
    parser.add_argument("--samples-per-shard", type=int, default=500, help="samples per tar (default 500)")
    parser.add_argument(
        "--payload",
        choices=PAYLOAD_EXTENSIONS,
        default="s2c",
        help="s2c: fast lossless Blosc arrays (default); tif: the original GeoTIFF bytes",
    )
    parser.add_argument(
        "--bands",
        help="comma-separated band names: GeoTIFFs' file order (default: S2-100K's 12); for Major TOM and "
        "SSL4EO-S12 the bands to take, in this order (default: all the source has)",
    )
    parser.add_argument("--patch-size", type=int, default=256, help="Major TOM: side of the patches cut from each cell, px at 10 m (default 256)")
    parser.add_argument("--max-cloud", type=float, help="Major TOM: leave out patches whose cloud-mask fraction is above this (0-1)")
    select = parser.add_argument_group("Major TOM: select rows on metadata.parquet before reading (only the selected rows are fetched)")
    select.add_argument("--bbox", type=float, nargs=4, metavar=("W", "S", "E", "N"), help="cell centres in this box, degrees (W > E crosses the antimeridian)")
    select.add_argument("--region", metavar="GEOJSON", help="cell centres in this (multi)polygon, a GeoJSON file or URL")
    select.add_argument("--start", help="timestamp on or after this date / date-time (ISO 8601)")
    select.add_argument("--end", help="timestamp on or before this date (the whole day) / date-time")
    select.add_argument("--max-cloud-cover", type=float, metavar="PCT", help="the index's cloud_cover (percent of the cell) at most this")
    select.add_argument("--cells", metavar="FILE", help="only these grid cells (a file: one per line, or comma / space separated)")
    select.add_argument("--sample", type=int, metavar="N", help="then N of the selected rows, uniformly at random")
    select.add_argument("--seed", type=int, default=0, help="the seed of --sample (default 0)")
    parser.add_argument("--season", type=int, choices=(1, 2, 3, 4), help="SSL4EO-S12: only timestamps in this quarter (1: Jan-Mar ... 4: Oct-Dec)")
    parser.add_argument("--workers", type=int, default=1, help="encoding processes (default 1)")
    parser.add_argument("--overwrite", action="store_true", help="replace shards already in --out")
    add_progress_argument(parser)


def run(args: argparse.Namespace) -> int:
    bands = [b.strip() for b in args.bands.split(",") if b.strip()] if args.bands else None
    try:
        manifest = write_shards(
            args.inputs,
            args.out,
            index=args.index,
            samples_per_shard=args.samples_per_shard,
            payload=args.payload,
            bands=bands,
            workers=args.workers,
            overwrite=args.overwrite,
            index_columns={"lon_col": args.lon_col, "lat_col": args.lat_col, "crs": args.crs, "time_col": args.time_col},
            patch_size=args.patch_size,
            max_cloud=args.max_cloud,
            season=args.season,
            select=CellFilters(
                bbox=tuple(args.bbox) if args.bbox else None,
                region=args.region,
                start=args.start,
                end=args.end,
                max_cloud_cover=args.max_cloud_cover,
                cells=args.cells,
                sample=args.sample,
                seed=args.seed,
            ),
            progress=not args.no_progress,
        )
    except ShardInputError as err:
        print(f"satclip shards: error: {err}", file=sys.stderr)
        return 2
    size = sum((Path(args.out) / s["name"]).stat().st_size for s in manifest["shards"]) / 2**20
    print(
        f"wrote {manifest['samples']} samples in {len(manifest['shards'])} shards ({size:.1f} MiB, payload {args.payload}) to {args.out}; "
        f"{manifest['with_time']} with acquisition time"
    )
    if "selection" in manifest:
        chosen = manifest["selection"]
        print(f"selected {chosen['rows_selected']} of {chosen['rows_in_index']} rows of {chosen['index']} in {chosen['parts']} parts")
    for label, counts in (("skipped (corrupt)", manifest["skipped"]), ("filtered", manifest["filtered"])):
        if counts:
            print(f"{label}: {sum(counts.values())} ({', '.join(f'{k}={n}' for k, n in counts.items())})")
    return 0


__all__ = [
    "MANIFEST_FORMAT",
    "Collected",
    "ShardInputError",
    "collect_tasks",
    "encode_in_order",
    "encode_sample",
    "IndexTable",
    "read_index",
    "read_index_table",
    "time_from_tags",
    "write_shards",
]
