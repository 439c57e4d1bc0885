"""SSL4EO-S12 v1.1 ``*.zarr.zip`` files -> one sample per location and timestamp for ``satclip shards``.

Each file (Zarr format 2, consolidated metadata, zipped) holds 64 locations x 4 timestamps of one
modality (``S2L2A``, ``S2L1C``, ...), as the dataset card shows: ``bands`` (sample, time, band, y, x)
(int16 for S2L2A, 264 x 264 px at 10 m), the coordinate ``band`` (band names), ``center_lon`` /
``center_lat`` (sample), ``crs`` (sample, EPSG code), ``sample_id`` (sample, time), ``time_``
(sample, time; CF-encoded datetime64, ``units`` "<unit> since <date>"), ``cloud_mask``, ``x_``, ``y_``.
A file may be a URL (:mod:`satclip.data.remote`). Coordinates and time come from these metadata variables; ``season`` (1-4) keeps only the timestamps
in that quarter of the year (1: January-March, ... 4: October-December).

Values are kept exactly: the int16 digital numbers are non-negative reflectances x 10000 and are
stored as the uint16 the loader reads (the same numbers); a sample with a negative value is skipped
as ``values``. A timestamp that cannot be read is skipped as ``read``; a file whose metadata
cannot be read stops the run (:class:`~satclip.data.sources.ShardInputError`) naming it.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..acqtime import SECONDS_PER_DAY, parse_time
from ..extras import MissingExtraError, requires_extra
from ..geo import valid_lonlat
from . import remote
from .partition import Units
from .sources import Collected, Encoded, FolderUrl, Location, Reader, ReadOptions, ShardInputError, payload_bytes, sample_key, sample_record

SUFFIX = ".zarr.zip"
_UNIT_SECONDS = {"nanoseconds": 1e-9, "microseconds": 1e-6, "milliseconds": 1e-3, "seconds": 1.0, "minutes": 60.0, "hours": 3600.0, "days": SECONDS_PER_DAY}
_NAT = np.iinfo(np.int64).min


def is_ssl4eo(location: str | Path) -> bool:
    """A ``*.zarr.zip`` file (a path that exists, or a URL)."""
    if remote.is_url(location):
        return str(location).endswith(SUFFIX)
    return Path(location).is_file() and Path(location).name.endswith(SUFFIX)


def files_in(root: Path) -> list[Path]:
    """Every ``*.zarr.zip`` under ``root`` (e.g. ``train/S2L2A/``), sorted."""
    return sorted(p for p in root.rglob(f"*{SUFFIX}") if p.is_file())


def open_group(location: str | Path):
    """The root group of a zipped, consolidated Zarr format 2 store (a path, or a URL read through
    fsspec's zip file system: the zip directory, then each chunk by range requests), read-only; a
    file that is not one (not a zip, no consolidated metadata) is a :class:`ShardInputError` naming it."""
    with requires_extra("satclip shards of SSL4EO-S12 zarr.zip files"):
        import zarr
        from zarr.storage import FsspecStore, ZipStore
    if remote.is_url(location):
        url = str(location)
        with remote.backend(url):
            store = FsspecStore.from_url(f"zip::{url}", storage_options={url.partition("://")[0]: remote.options(url)}, read_only=True)
        return zarr.open_consolidated(store, mode="r", zarr_format=2)
    try:
        return zarr.open_consolidated(ZipStore(location, mode="r"), mode="r", zarr_format=2)
    except Exception as err:  # noqa: BLE001 - zipfile, zarr and key errors: say which file and what
        raise ShardInputError(f"{location}: not a readable SSL4EO-S12 v1.1 zarr.zip ({type(err).__name__}: {err})") from None


def cf_seconds(values: np.ndarray, attrs: dict, *, name: str) -> np.ndarray:
    """CF-encoded times (``units`` "<unit> since <date>") -> Unix seconds (NaN for NaT / fill)."""
    units = str(attrs.get("units", ""))
    unit, sep, epoch = units.partition(" since ")
    if not sep or unit.strip() not in _UNIT_SECONDS:
        raise ValueError(f"{name}: units {units!r} are not '<{'|'.join(_UNIT_SECONDS)}> since <date>'")
    raw = np.asarray(values)
    seconds = raw.astype(np.float64) * _UNIT_SECONDS[unit.strip()] + parse_time(epoch, f"{name} units")
    unknown = raw == _NAT if raw.dtype.kind in "iu" else ~np.isfinite(raw)
    if "_FillValue" in attrs and attrs["_FillValue"] is not None:
        unknown |= raw == attrs["_FillValue"]
    return np.where(unknown, math.nan, seconds)


def quarter(seconds: float) -> int | None:
    """The quarter of the year (1-4) of a Unix time in UTC; None when unknown."""
    if not math.isfinite(seconds):
        return None
    return (int(np.datetime64(int(seconds), "s").astype("datetime64[M]").astype(int)) % 12) // 3 + 1


@dataclass(frozen=True)
class LocationTask:
    """The chosen timestamps of one location of one file."""

    path: str
    source: str
    index: int
    times: tuple[int, ...]
    keys: tuple[str, ...]
    seconds: tuple[float, ...]
    lonlat: tuple[float, float]
    crs: str | None
    bands: tuple[str, ...]

    def encode(self, payload: str, bands: tuple[str, ...] | None) -> Encoded:
        return encode_location(self, payload, bands=bands)


def location_tasks(files: Sequence[str | Path], season: int | None = None, *, start: int = 0, stop: int | None = None) -> Iterator[LocationTask]:
    """One task per location of every file, in file and sample order; only the locations numbered
    ``[start, stop)`` across the files (a part of a split run, :mod:`satclip.data.partition`)."""
    first: tuple[str, ...] | None = None
    offset = 0  # the number of the file's first location
    for path in files:
        try:
            group = open_group(path)
            names = tuple(str(b) for b in group["band"][:])
            count = int(group["sample_id"].shape[0])
            if offset + count <= start or (stop is not None and offset >= stop):
                offset += count
                continue
            ids = np.asarray(group["sample_id"][:]).astype(str)
            lon, lat = np.asarray(group["center_lon"][:], np.float64), np.asarray(group["center_lat"][:], np.float64)
            crs = np.asarray(group["crs"][:]) if "crs" in group else None
            seconds = cf_seconds(group["time_"][:], group["time_"].attrs.asdict(), name=f"{path}: time_")
        except (ShardInputError, MissingExtraError):
            raise
        except Exception as err:  # noqa: BLE001 - zip, zarr, key and network errors: say which file and what
            raise ShardInputError(f"{path}: not a readable SSL4EO-S12 v1.1 zarr.zip ({type(err).__name__}: {err})") from err
        if first is None:
            first = names
        elif names != first:
            raise ShardInputError(f"{path}: bands {list(names)}, the first file has {list(first)} (one band list per shard set)")
        for s in range(max(start - offset, 0), count if stop is None else min(stop - offset, count)):
            keep = tuple(t for t in range(ids.shape[1]) if season is None or quarter(float(seconds[s, t])) == season)
            if not keep:
                continue
            yield LocationTask(
                path=str(path),
                source=remote.name_of(path),
                index=s,
                times=keep,
                keys=tuple(sample_key(str(ids[s, t])) for t in keep),
                seconds=tuple(float(seconds[s, t]) for t in keep),
                lonlat=(float(lon[s]), float(lat[s])),
                crs=f"EPSG:{int(crs[s])}" if crs is not None else None,
                bands=names,
            )
        offset += count


def count_locations(files: Sequence[str | Path]) -> int:
    return sum(int(open_group(p)["sample_id"].shape[0]) for p in files)


_OPEN: dict[str, object] = {}


def _group(path: str):
    """The open group of ``path``, kept per worker process (consecutive tasks read the same file)."""
    if path not in _OPEN:
        _OPEN.clear()
        _OPEN[path] = open_group(path)
    return _OPEN[path]


def encode_location(task: LocationTask, payload: str, *, bands: Sequence[str] | None) -> Encoded:
    """Read the task's timestamps exactly as stored; bad ones give counted skips."""
    out = Encoded()
    names = task.bands if bands is None else tuple(bands)
    missing = [b for b in names if b not in task.bands]
    if missing:
        raise ShardInputError(f"{task.source}: no band(s) {missing} for --bands; it has {list(task.bands)}")
    select = [task.bands.index(b) for b in names]
    lon, lat = task.lonlat
    for t, key, seconds in zip(task.times, task.keys, task.seconds):
        where = f"{task.source}:sample {task.index} time {t}"
        if not valid_lonlat(lon, lat):
            out.skipped.append(("georeference", where, f"center_lon={lon}, center_lat={lat} is not a valid coordinate"))
            continue
        try:
            stored = np.asarray(_group(task.path)["bands"][task.index, t])
        except Exception as err:  # noqa: BLE001 - a corrupt chunk: zarr / numcodecs errors
            out.skipped.append(("read", where, f"bands do not read: {type(err).__name__}: {err}"))
            continue
        array = stored[select]
        if array.dtype.kind == "i":
            if array.size and int(array.min()) < 0:
                out.skipped.append(("values", where, f"negative digital number {int(array.min())}"))
                continue
            array = array.astype(np.uint16)
        array = np.ascontiguousarray(array)
        record = sample_record(lon, lat, seconds=seconds, source=where, crs=task.crs, bands=names, array=array, stored_dtype=str(stored.dtype))
        out.samples.append((key, payload_bytes(array, payload, source=task.source), record))
    return out


class Ssl4eoReader(Reader):
    """SSL4EO-S12 ``*.zarr.zip`` files (or a folder, local or a URL, holding them), split by location."""

    name = f"SSL4EO-S12 {SUFFIX} files"
    suffixes = (SUFFIX,)
    in_folder_url = f"SSL4EO-S12 {SUFFIX} files"

    def whole(self, location: Location, options: ReadOptions) -> Collected | None:
        if isinstance(location, FolderUrl):
            found: Sequence[Location] = remote.glob(remote.join(location, "**", f"*{SUFFIX}"))
        else:
            found = files_in(location) if isinstance(location, Path) and location.is_dir() else []
        return self.collect(found, options) if found else None

    def detect(self, location: Location) -> bool:
        return is_ssl4eo(location)

    def collect(self, inputs: Sequence[Location], options: ReadOptions) -> Collected:
        count = count_locations(inputs)
        part = lambda a, b: Collected(location_tasks(inputs, options.season, start=a, stop=b), b - a, "location", 4)  # noqa: E731
        return Collected(location_tasks(inputs, options.season), count, "location", 4, units=Units("locations", count, part))


READER = Ssl4eoReader()

__all__ = [
    "READER",
    "Ssl4eoReader",
    "LocationTask",
    "cf_seconds",
    "count_locations",
    "encode_location",
    "files_in",
    "is_ssl4eo",
    "location_tasks",
    "open_group",
    "quarter",
]
