"""Which input ``satclip shards`` was given (the layouts in :mod:`satclip.data.shards`), and its tasks:
one per GeoTIFF, Major TOM row or SSL4EO-S12 location, in the order they are written.

:data:`READERS` is the registry of the layouts (each a :class:`~satclip.data.sources.Reader`), in
the order they are tried: one input given alone is offered to each as a whole (a folder, a folder
URL, Major TOM's ``metadata.parquet``), then the inputs as files to the first that detects them all.
Adding a corpus is adding its reader module and its entry here.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from . import remote
from .cellselect import CellFilters
from .geotiffs import FOLDER_READER, SHOWN_NAMES, TARS_READER
from .majortom import READER as MAJORTOM
from .sources import Collected, FolderUrl, Location, Reader, ReadOptions, ShardInputError
from .ssl4eo import READER as SSL4EO

READERS: tuple[Reader, ...] = (MAJORTOM, SSL4EO, TARS_READER, FOLDER_READER)
"""The input layouts, in the order they are tried (a folder: Major TOM parts first, a GeoTIFF folder last)."""


def _either(kinds: Sequence[str], last: str) -> str:
    return f"{', '.join(kinds[:-1])}{last}{kinds[-1]}" if len(kinds) > 1 else "".join(kinds)


def _location(given: str | Path) -> Location:
    """A path, a URL, or a :class:`FolderUrl` (a URL whose name ends in no reader's file suffix nor an index's ``.csv``)."""
    text = str(given)
    if not remote.is_url(text):
        return Path(given)
    return FolderUrl(text) if not text.rstrip("/").endswith((".csv", *(s for r in READERS for s in r.suffixes))) else text


def _unusable(locations: Sequence[Location]) -> ShardInputError:
    """The error for inputs that no reader takes: what they may be, and which are not usable (why, when a reader says)."""
    bad = [p for p in locations if not any(r.detect(p) for r in READERS)] or list(locations)
    why = {p: None if isinstance(p, Path) and p.is_dir() else next((w for r in READERS if (w := r.why_not(p))), None) for p in bad[:SHOWN_NAMES]}
    listed = "; ".join(f"{p}" + (f" ({why[p]})" if why[p] else "") for p in bad[:SHOWN_NAMES])
    files = [r.name for r in READERS if r.in_folder_url is not None]
    local = "".join(f"; {r.name}: a local path" for r in READERS if r.in_folder_url is None)
    return ShardInputError(
        f"expected one folder, {_either(files, ', or ')} (paths or URLs{local}), one kind at a time; not usable: {listed}"
        f"{' ...' if len(bad) > SHOWN_NAMES else ''}"
    )


def collect_tasks(
    inputs: Sequence[str | Path],
    index: str | Path | None = None,
    *,
    index_columns: dict[str, str | None] | None = None,
    bands: Sequence[str] | None = None,
    patch_size: int = 256,
    max_cloud: float | None = None,
    season: int | None = None,
    select: CellFilters | None = None,
) -> Collected:
    """Work out the input layout (module docstring) and return its tasks."""
    options = ReadOptions(select or CellFilters(), index, index_columns, bands, patch_size, max_cloud, season)
    options.filters.check()
    locations = [_location(p) for p in inputs]
    for p in locations:
        if isinstance(p, Path) and not p.exists():
            raise ShardInputError(f"input {p} does not exist")
    readers = [r for r in READERS if r.selects_rows or not options.filters.given()]
    one = locations[0] if len(locations) == 1 else None
    if one is not None:
        for each in readers:
            collected = each.whole(one, options)
            if collected is not None:
                return collected
        if isinstance(one, FolderUrl):
            found = _either([r.in_folder_url for r in READERS if r.in_folder_url is not None], " or ")
            raise ShardInputError(f"{one}: no {found} found (a server that lists no folder: give the files)")
        if isinstance(one, Path) and one.is_dir():
            if options.filters.given():
                raise ShardInputError(f"{one}: row selection (--bbox, --cells, ...) is for Major TOM parts; this folder has none")
            why = next((w for r in READERS if (w := r.why_not(one))), None)
            raise ShardInputError(f"{one}: {why}") if why is not None else _unusable(locations)
    reader = next((r for r in readers if all(r.detect(p) for p in locations)), None)
    if reader is not None:
        return reader.collect(locations, options)
    if options.filters.given():
        raise ShardInputError("row selection (--bbox, --region, --start/--end, --max-cloud-cover, --cells, --sample) is for Major TOM parts")
    raise _unusable(locations)


__all__ = ["READERS", "collect_tasks"]
