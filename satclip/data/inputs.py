"""Which input ``satclip shards`` was given (the layouts in :mod:`satclip.data.shards`), and its tasks:
one per GeoTIFF, Major TOM row or SSL4EO-S12 location, in the order they are written."""

from __future__ import annotations

import dataclasses
import itertools
import os
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from . import cellselect, majortom, remote, ssl4eo
from .cellselect import CellFilters, PartRows
from .geotiffs import SHOWN_NAMES, TIF_SUFFIXES, folder_tasks, tar_tasks
from .partition import Units
from .s2index import INDEX_NAMES, IndexTable, read_index_table
from .sources import ShardInputError

TAR_SUFFIXES = (".tar", ".tar.gz", ".tgz")


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
    units: Units | None = None
    """How the tasks split into the parts of a split run (:mod:`satclip.data.partition`); None: a part already."""

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


def _listed(tasks: list) -> Collected:
    """A list of GeoTIFF tasks, split by task."""
    return Collected(tasks, len(tasks), units=Units("patches", len(tasks), lambda a, b: Collected(tasks[a:b], b - a)))


def _rows(tasks_from: Callable[[int], Iterable], start: int, stop: int, selection: dict | None) -> Collected:
    """Major TOM rows ``[start, stop)``; ``tasks_from(n)``: the tasks after the first n rows, which it skips without reading them."""
    n = stop - start
    return Collected(
        itertools.islice(tasks_from(start), n),
        n,
        "cell",
        2,
        selection,
        lambda done: itertools.islice(tasks_from(start + done), n - done),
    )


def _majortom_collected(parts: list[PartRows], selection: dict | None, bands: Sequence[str] | None, patch_size: int, max_cloud: float | None) -> Collected:
    if max_cloud is not None and not 0 <= max_cloud <= 1:
        raise ShardInputError(f"--max-cloud is a fraction of a patch's pixels, 0 to 1; got {max_cloud}")
    tasks_from = lambda skip: majortom.cell_tasks(parts, bands, patch_size, max_cloud, skip=skip)  # noqa: E731
    rows = majortom.count_rows(parts)
    return dataclasses.replace(_rows(tasks_from, 0, rows, selection), units=Units("cells", rows, lambda a, b: _rows(tasks_from, a, b, selection)))


def _ssl4eo_collected(paths: Sequence[str | Path], season: int | None) -> Collected:
    count = ssl4eo.count_locations(paths)
    part = lambda a, b: Collected(ssl4eo.location_tasks(paths, season, a, b), b - a, "location", 4)  # noqa: E731
    return Collected(ssl4eo.location_tasks(paths, season), count, "location", 4, units=Units("locations", count, part))


def _tars_collected(paths: Sequence[str | Path], table: IndexTable | None) -> Collected:
    """S2-100K tars, split by whole tar files (their members are only known by reading them)."""
    return Collected(tar_tasks(paths, table), None, units=Units("tar files", len(paths), lambda a, b: Collected(tar_tasks(paths[a:b], table), None)))


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
                return _listed(folder_tasks(root, table))
    if all(majortom.is_majortom(p) for p in paths):
        return _majortom_collected(*_majortom_parts(paths, None, index, filters), bands, patch_size, max_cloud)
    if filters.given():
        raise ShardInputError("row selection (--bbox, --region, --start/--end, --max-cloud-cover, --cells, --sample) is for Major TOM parts")
    if all(ssl4eo.is_ssl4eo(p) for p in paths):
        return _ssl4eo_collected(paths, season)
    not_tars = [p for p in paths if not (str(p).endswith(TAR_SUFFIXES) and (isinstance(p, str) or p.is_file()))]
    if not_tars:
        why = {p: majortom.not_a_part(p) if isinstance(p, Path) and p.is_file() and p.suffix == ".parquet" else None for p in not_tars}
        listed = "; ".join(f"{p}" + (f" ({why[p]})" if why[p] else "") for p in not_tars[:SHOWN_NAMES])
        raise ShardInputError(
            f"expected one folder, tar files ({', '.join(TAR_SUFFIXES)}), Major TOM Parquet parts or its metadata.parquet, or SSL4EO-S12 "
            f"{ssl4eo.SUFFIX} files (paths or URLs; a GeoTIFF folder: a local path), one kind at a time; not usable: {listed}"
            f"{' ...' if len(not_tars) > SHOWN_NAMES else ''}"
        )
    table = read_index_table(index, **(index_columns or {})) if index is not None else None
    return _tars_collected(paths, table)


__all__ = ["TAR_SUFFIXES", "Collected", "collect_tasks"]
