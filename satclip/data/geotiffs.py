"""GeoTIFF inputs of ``satclip shards``: one task per file of an S2-100K folder or a GeoTIFF folder, or
per ``*.tif`` member of S2-100K tars, and its encoding (decoded once, checked, with its record); the
two readers (:class:`GeoTiffFolderReader`, :class:`S2TarsReader`) that find them."""

from __future__ import annotations

import contextlib
import math
import os
import tarfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from ..acqtime import parse_time
from ..geo import lonlat_problem
from . import remote
from .bands import S2_BANDS
from .partition import Units
from .payload import decode_tif, encode_fast
from .s2index import INDEX_NAMES, IndexTable, read_index_table
from .sources import Collected, Encoded, FolderUrl, Location, Reader, ReadOptions, ShardInputError, sample_record

TIF_SUFFIXES = (".tif", ".tiff")
TAR_SUFFIXES = (".tar", ".tar.gz", ".tgz")
TIME_TAGS = ("ACQUISITION_DATETIME", "DATETIME", "TIFFTAG_DATETIME")
"""GeoTIFF metadata tags read for the acquisition time, first found wins (TIFF's own tag is written
``YYYY:MM:DD HH:MM:SS``)."""
SHOWN_NAMES = 5
"""How many names an error about missing or unlisted files shows."""
NO_TIFS = "no index.csv and no GeoTIFF (*.tif, *.tiff) files"


@dataclass(frozen=True)
class GeoTiffTask:
    """One patch to write: ``data`` (bytes read from a tar) or ``path``; ``lonlat`` None = georeference."""

    key: str
    source: str
    path: str | None = None
    data: bytes | None = None
    lonlat: tuple[float, float] | None = None
    seconds: float | None = None  # from the index's time column; None or NaN: the GeoTIFF's tags

    def encode(self, payload: str, bands: tuple[str, ...] | None) -> Encoded:
        return Encoded(samples=[encode_sample(self, payload, bands=bands or S2_BANDS)])


def _key(relative: str) -> str:
    """Sample key of a file: its path without the suffix; dots become '_' (WebDataset splits there)."""
    stem = relative.rsplit(".", 1)[0] if "." in os.path.basename(relative) else relative
    return stem.replace(".", "_")


def folder_tasks(root: Path, table: IndexTable | None) -> list[GeoTiffTask]:
    """Tasks for an S2-100K folder (with an index) or a plain folder of GeoTIFFs (georeference)."""
    if table is None:
        files = sorted(p for p in root.rglob("*") if p.suffix.lower() in TIF_SUFFIXES and p.is_file())
        if not files:
            raise ShardInputError(f"{root}: {NO_TIFS}")
        return [GeoTiffTask(_key(p.relative_to(root).as_posix()), p.relative_to(root).as_posix(), path=str(p)) for p in files]
    index, times = table.lonlat, table.times or {}
    tasks, missing = [], []
    for name, lonlat in index.items():
        path = next((p for p in (root / "images" / name, root / name) if p.is_file()), None)
        if path is None:
            missing.append(name)
            continue
        tasks.append(GeoTiffTask(_key(name), path.relative_to(root).as_posix(), path=str(path), lonlat=lonlat, seconds=times.get(name)))
    if missing:
        raise ShardInputError(f"{root}: {len(missing)} of {len(index)} files in the index are missing under {root / 'images'}: {first_names(missing)}")
    present = (p for folder in (root, root / "images") if folder.is_dir() for p in folder.iterdir())
    unlisted = sorted(p.name for p in present if p.suffix.lower() in TIF_SUFFIXES and p.is_file() and p.name not in index)
    if unlisted:
        raise ShardInputError(f"{root}: {len(unlisted)} GeoTIFFs are not in the index: {first_names(unlisted)}; add them to the index or move them out")
    return tasks


def first_names(names: Sequence[str]) -> str:
    return ", ".join(names[:SHOWN_NAMES]) + (", ..." if len(names) > SHOWN_NAMES else "")


def _open_tar(location: str | Path, stack: contextlib.ExitStack) -> tarfile.TarFile:
    """A tar (path or URL) open as a stream."""
    if not remote.is_url(location):
        return stack.enter_context(tarfile.open(location, "r|*"))
    raw = stack.enter_context(remote.open_stream(str(location)))
    stack.enter_context(remote.reading(location))
    return stack.enter_context(tarfile.open(fileobj=raw, mode="r|*"))


def tar_tasks(tars: Sequence[str | Path], table: IndexTable | None) -> Iterator[GeoTiffTask]:
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
                    yield GeoTiffTask(_key(name), f"{remote.name_of(tar_path)}:{member.name}", data=data, lonlat=lonlat, seconds=seconds)
        except (tarfile.TarError, EOFError, OSError) as err:
            raise ShardInputError(f"{tar_path}: not a readable tar ({type(err).__name__}: {err})") from err


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


def encode_sample(task: GeoTiffTask, payload: str, *, bands: Sequence[str]) -> tuple[str, bytes, dict]:
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
    problem = lonlat_problem(lon, lat)
    if problem:
        raise ShardInputError(f"{task.source}: {problem}")
    record = sample_record(lon, lat, seconds=seconds, source=task.source, crs=crs, bands=tuple(bands), array=array)
    blob = data if payload == "tif" else encode_fast(array)
    return task.key, blob, record


def _folder_index(root: Path) -> Path | None:
    return next((root / name for name in INDEX_NAMES if (root / name).is_file()), None)


def _has_tifs(root: Path) -> bool:
    return any(p.suffix.lower() in TIF_SUFFIXES for p in root.rglob("*"))


def _table(index: Location | None, options: ReadOptions) -> IndexTable | None:
    return read_index_table(index, **(options.index_columns or {})) if index is not None else None


class GeoTiffFolderReader(Reader):
    """An S2-100K folder (its index and ``images/``) or a folder of GeoTIFFs (local), split by file."""

    name = "a GeoTIFF folder"
    suffixes = TIF_SUFFIXES

    def whole(self, location: Location, options: ReadOptions) -> Collected | None:
        if not isinstance(location, Path) or not location.is_dir():
            return None
        index = Path(options.index) if options.index is not None else _folder_index(location)
        if index is None and not _has_tifs(location):
            return None
        tasks = folder_tasks(location, _table(index, options))
        return Collected(tasks, len(tasks), units=Units("patches", len(tasks), lambda a, b: Collected(tasks[a:b], b - a)))

    def why_not(self, location: Location) -> str | None:
        return NO_TIFS if isinstance(location, Path) and location.is_dir() else None


class S2TarsReader(Reader):
    """S2-100K tars (files, or a folder, local or a URL, holding them, possibly in ``data/``) with the
    index given or beside them, split by whole tar files (their members are only known by reading them)."""

    name = f"tar files ({', '.join(TAR_SUFFIXES)})"
    suffixes = TAR_SUFFIXES
    in_folder_url = "tars"

    def whole(self, location: Location, options: ReadOptions) -> Collected | None:
        index = options.index
        if isinstance(location, FolderUrl):
            tars = [u for u in remote.glob(remote.join(location, "data", "*")) + remote.glob(remote.join(location, "*")) if u.endswith(TAR_SUFFIXES)]
            if not tars:
                return None
            in_data = [u for u in tars if u.startswith(remote.join(location, "data") + "/")]
            if index is None:
                index = next((remote.join(location, n) for n in INDEX_NAMES if remote.exists(remote.join(location, n))), None)
            return self._collected(in_data or tars, _table(index, options))
        if not isinstance(location, Path) or not location.is_dir():
            return None
        data = location / "data"
        folder = data if data.is_dir() and any(p.name.endswith(TAR_SUFFIXES) for p in data.iterdir()) else location
        found = sorted(p for p in folder.iterdir() if p.name.endswith(TAR_SUFFIXES))
        if not found or _has_tifs(location):
            return None
        return self._collected(found, _table(index if index is not None else _folder_index(location), options))

    def detect(self, location: Location) -> bool:
        return str(location).endswith(TAR_SUFFIXES) and (isinstance(location, str) or location.is_file())

    def collect(self, inputs: Sequence[Location], options: ReadOptions) -> Collected:
        return self._collected(inputs, _table(options.index, options))

    @staticmethod
    def _collected(tars: Sequence[Location], table: IndexTable | None) -> Collected:
        return Collected(tar_tasks(tars, table), None, units=Units("tar files", len(tars), lambda a, b: Collected(tar_tasks(tars[a:b], table), None)))


FOLDER_READER = GeoTiffFolderReader()
TARS_READER = S2TarsReader()

__all__ = [
    "FOLDER_READER",
    "TAR_SUFFIXES",
    "TARS_READER",
    "GeoTiffFolderReader",
    "S2TarsReader",
    "TIF_SUFFIXES",
    "TIME_TAGS",
    "GeoTiffTask",
    "encode_sample",
    "folder_tasks",
    "tar_tasks",
    "time_from_tags",
]
