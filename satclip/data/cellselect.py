"""Select Major TOM rows on the metadata index before reading any image: ``satclip shards --bbox``,
``--region``, ``--start`` / ``--end``, ``--max-cloud-cover``, ``--cells``, ``--sample`` / ``--seed``.

The index is ``metadata.parquet`` as published beside the parts (one row per part row: ``grid_cell``,
``product_id``, ``timestamp``, ``cloud_cover`` (percent, 0-100), ``centre_lat``, ``centre_lon``,
``parquet_url``, ``parquet_row`` (the row group in that part, as ESA-PhiLab/Major-TOM's reader
takes it), ...). It is read row group by row group, only the columns the filters need; a row is
kept when it passes every filter given, in this order:

- ``bbox`` (W, S, E, N degrees; W > E crosses the antimeridian) and ``region`` (a GeoJSON
  polygon or multipolygon, its boundary included) on the cell centre;
- ``start`` / ``end`` on ``timestamp``, inclusive (a date alone as ``end`` includes that day);
- ``max_cloud_cover`` on ``cloud_cover``;
- ``cells``: a file of grid cells (``272U_1093R``, one per line or separated by commas / spaces,
  ``#`` comments);
- ``sample``: then N of the remaining rows uniformly at random (``seed``), without replacement.
  Major TOM's grid cells have equal areas, so a uniform sample of cells is uniform in area over the
  region the other filters leave (e.g. "over land" with a land polygon).

The selection keeps the index's part and row order; :func:`select` returns the parts with their
row groups to read and, for the manifest, what was selected and how (the filters, the rows before
and after each, the parts touched).
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from ..acqtime import SECONDS_PER_DAY, parse_time
from ..extras import requires_extra
from ..geo import validate_bbox
from . import remote
from .sources import ShardInputError

PART_COLUMNS = ("parquet_url", "parquet_row")
SHOWN = 5


@dataclass(frozen=True)
class CellFilters:
    """What ``satclip shards`` selects from a Major TOM index (module docstring); None: no filter."""

    bbox: tuple[float, float, float, float] | None = None
    region: str | None = None
    start: str | None = None
    end: str | None = None
    max_cloud_cover: float | None = None
    cells: str | None = None
    sample: int | None = None
    seed: int = 0

    def given(self) -> bool:
        return any(v is not None for k, v in asdict(self).items() if k != "seed")

    def check(self) -> None:
        """Raise ShardInputError for a value out of range (before anything is read)."""
        if self.bbox is not None:
            try:
                validate_bbox(self.bbox, "--bbox W S E N", crossing=True)
            except ValueError as err:
                raise ShardInputError(str(err)) from None
        if self.max_cloud_cover is not None and not 0 <= self.max_cloud_cover <= 100:
            raise ShardInputError(f"--max-cloud-cover is a percentage (the index's cloud_cover), 0 to 100; got {self.max_cloud_cover}")
        if self.sample is not None and self.sample < 1:
            raise ShardInputError(f"--sample is a number of rows, >= 1; got {self.sample}")
        for name, text in (("--start", self.start), ("--end", self.end)):
            if text is not None:
                try:
                    parse_time(text, name)
                except ValueError as err:
                    raise ShardInputError(str(err)) from None

    def described(self) -> dict:
        """The filters given, for the manifest (``seed`` only with ``sample``)."""
        given = {k: (list(v) if isinstance(v, tuple) else v) for k, v in asdict(self).items() if v is not None and k != "seed"}
        return {**given, "seed": self.seed} if self.sample is not None else given


@dataclass(frozen=True)
class PartRows:
    """A Major TOM part to read: its path or URL and the row groups to take (None: all)."""

    location: str
    row_groups: tuple[int, ...] | None = None


def _columns(filters: CellFilters) -> list[str]:
    wanted = ["grid_cell", *PART_COLUMNS]
    if filters.bbox is not None or filters.region is not None:
        wanted += ["centre_lon", "centre_lat"]
    if filters.start is not None or filters.end is not None:
        wanted.append("timestamp")
    if filters.max_cloud_cover is not None:
        wanted.append("cloud_cover")
    return wanted


def is_index(location: str | Path) -> bool:
    """Whether a ``metadata.parquet`` (path or URL) is Major TOM's index (its schema, from the footer)."""
    with remote.reading(location), remote.parquet_file(location) as parquet:
        return {"grid_cell", *PART_COLUMNS} <= set(parquet.schema_arrow.names)


def read_index(location: str | Path, columns: Sequence[str]) -> dict[str, list]:
    """Columns of a Major TOM ``metadata.parquet`` (path or URL), row group by row group."""
    with remote.reading(location), remote.parquet_file(location) as parquet:
        names = parquet.schema_arrow.names
        missing = [c for c in columns if c not in names]
        if missing:
            raise ShardInputError(f"Major TOM index {location}: no column(s) {missing} (needed by the filters given); it has {names}")
        out: dict[str, list] = {c: [] for c in columns}
        for group in range(parquet.num_row_groups):
            table = parquet.read_row_group(group, columns=list(columns))
            for c in columns:
                out[c].extend(table.column(c).to_pylist())
    return out


def read_text(location: str) -> str:
    """A small text file (cell list, GeoJSON) from a path or URL."""
    if remote.is_url(location):
        with remote.open_stream(location) as f, remote.reading(location):
            return f.read().decode()
    path = Path(location)
    if not path.is_file():
        raise ShardInputError(f"{location} does not exist")
    return path.read_text()


def read_cells(location: str) -> list[str]:
    """The grid cells listed in a file: one per line, or separated by commas / whitespace; ``#`` comments."""
    text = "\n".join(line.split("#", 1)[0] for line in read_text(location).splitlines())
    cells = [c for c in re.split(r"[\s,]+", text) if c]
    if not cells:
        raise ShardInputError(f"--cells {location} lists no grid cell")
    return cells


def read_region(location: str):
    """The (multi)polygon of a GeoJSON file (a geometry, a Feature or a FeatureCollection: their union)."""
    with requires_extra("--region (a GeoJSON polygon)"):
        import shapely
        from shapely.geometry import shape
    try:
        data = json.loads(read_text(location))
        features = data["features"] if data.get("type") == "FeatureCollection" else [data]
        geometries = [shape(f["geometry"] if f.get("type") == "Feature" else f) for f in features]
    except (ValueError, KeyError, TypeError, AttributeError) as err:
        raise ShardInputError(f"--region {location}: not a GeoJSON geometry, Feature or FeatureCollection ({type(err).__name__}: {err})") from None
    region = shapely.union_all(geometries)
    if region.geom_type not in ("Polygon", "MultiPolygon") or region.is_empty:
        raise ShardInputError(f"--region {location}: a polygon is needed, it holds a {region.geom_type}")
    return region


def _times(values: list, start: str | None, *, end: str | None, where: str) -> np.ndarray:
    """Whether each ``timestamp`` is within [start, end] (a date alone as end: that whole day)."""
    lo = parse_time(start, "--start") if start is not None else -math.inf
    whole_day = end is not None and len(end.strip()) == 10
    hi = parse_time(end, "--end") + (SECONDS_PER_DAY if whole_day else 0) if end is not None else math.inf
    keep = np.zeros(len(values), bool)
    for i, value in enumerate(values):
        try:
            seconds = parse_time("" if value is None else str(value), "timestamp")
        except ValueError as err:
            raise ShardInputError(f"Major TOM index {where} row {i}: {err}") from None
        keep[i] = lo <= seconds and (seconds < hi if whole_day else seconds <= hi)
    return keep


def _filter_masks(filters: CellFilters, index: dict[str, list], *, where: str) -> list[tuple[str, Callable[[], np.ndarray]]]:
    """(name, mask) of each filter given, in the order applied (masks computed lazily)."""
    steps: list[tuple[str, Callable[[], np.ndarray]]] = []
    lonlat = lambda: (np.asarray(index["centre_lon"], np.float64), np.asarray(index["centre_lat"], np.float64))  # noqa: E731
    if filters.bbox is not None:
        w, s, e, n = filters.bbox

        def in_bbox() -> np.ndarray:
            lon, lat = lonlat()
            east = (lon >= w) & (lon <= e) if w <= e else (lon >= w) | (lon <= e)
            return east & (lat >= s) & (lat <= n)

        steps.append(("bbox", in_bbox))
    if filters.region is not None:
        region = read_region(filters.region)

        def in_region() -> np.ndarray:
            import shapely

            return np.asarray(shapely.intersects_xy(region, *lonlat()))

        steps.append(("region", in_region))
    if filters.start is not None or filters.end is not None:
        steps.append(("time", lambda: _times(index["timestamp"], filters.start, end=filters.end, where=where)))
    if filters.max_cloud_cover is not None:
        limit = filters.max_cloud_cover
        steps.append(("max_cloud_cover", lambda: np.asarray([c is not None and float(c) <= limit for c in index["cloud_cover"]], bool)))
    return steps


def select(index_location: str | Path, filters: CellFilters, *, part_location: Callable[[str], str | None]) -> tuple[list[PartRows], dict]:
    """The parts and row groups the filters select from a Major TOM index, and the manifest's
    ``selection`` record. ``part_location(parquet_url)``: where to read that part (None: not among
    the inputs; its rows are dropped, counted as ``among_inputs``, before ``sample``)."""
    filters.check()
    where = str(index_location)
    index = read_index(index_location, _columns(filters))
    total = len(index["grid_cell"])
    keep = np.ones(total, bool)
    after: dict[str, int] = {}
    record: dict = {"index": where, "filters": filters.described(), "rows_in_index": total}
    for name, mask in _filter_masks(filters, index, where=where):
        keep &= mask()
        after[name] = int(keep.sum())
    if filters.cells is not None:
        wanted = read_cells(filters.cells)
        listed = set(wanted)
        keep &= np.asarray([c in listed for c in index["grid_cell"]], bool)
        after["cells"] = int(keep.sum())
        present = set(index["grid_cell"])
        absent = [c for c in dict.fromkeys(wanted) if c not in present]
        record["cells_listed"] = len(listed)
        if absent:
            record["cells_not_in_index"] = {"count": len(absent), "first": absent[:SHOWN]}
    located = {int(i): part_location(str(index["parquet_url"][i])) for i in np.flatnonzero(keep)}
    rows = np.asarray([i for i, part in located.items() if part is not None], np.int64)
    if len(rows) < len(located):
        after["among_inputs"] = len(rows)
    if filters.sample is not None and filters.sample < len(rows):
        rows = np.sort(np.random.default_rng(filters.seed).choice(rows, filters.sample, replace=False))
        after["sample"] = len(rows)
    by_part: dict[str, list[int]] = {}
    for i in rows:
        by_part.setdefault(str(located[i]), []).append(int(index["parquet_row"][i]))
    parts = [PartRows(loc, tuple(sorted(set(groups)))) for loc, groups in sorted(by_part.items(), key=lambda kv: (remote.name_of(kv[0]), kv[0]))]
    record.update(rows_after=after, rows_selected=len(rows), parts=len(parts))
    return parts, record


__all__ = ["CellFilters", "PartRows", "is_index", "read_cells", "read_index", "read_region", "select"]
