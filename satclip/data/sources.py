"""What every input reader of ``satclip shards`` shares: the :class:`Reader` interface, the options
it reads with, its result (:class:`Collected`), its error, the result of encoding one task (samples,
plus rows skipped as corrupt and patches filtered out, by kind), and the JSON record.

A reader is one corpus layout (GeoTIFF folder, S2-100K tars, Major TOM Parquet, SSL4EO-S12 zarr.zip):
it recognises its inputs and lists their tasks; :data:`satclip.data.inputs.READERS` is the registry
that :func:`satclip.data.inputs.collect_tasks` walks, in order (docs/data.md, "Adding a corpus").

A task (one GeoTIFF, one Major TOM cell, one SSL4EO-S12 location) is encoded in a worker process by
its ``encode(payload, bands)`` method and gives an :class:`Encoded`; the writer adds the samples in
task order (output is the same for any number of workers) and sums the counts into the manifest.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from ..acqtime import time_record
from .partition import Units
from .payload import encode_fast

if TYPE_CHECKING:
    from .cellselect import CellFilters

Location = str | Path
"""An input: a local path (``Path``) or a URL (``str``)."""


class FolderUrl(str):
    """A URL that names a folder (its name ends in none of the readers' file suffixes)."""


SHOWN_PER_KIND = 5
"""How many skipped rows of each kind the writer names in its log; the rest are only counted."""


class ShardInputError(ValueError):
    """The inputs of ``satclip shards`` are unusable: the message names the file and the problem."""


class WorkerDiedError(ShardInputError):
    """An encoding worker process of ``satclip shards`` died (killed, out of memory, a crash in a
    reader): a run stopped by it can be resumed (:mod:`satclip.data.resume`)."""


@dataclass(frozen=True)
class ReadOptions:
    """What ``satclip shards`` reads its inputs with (:func:`satclip.data.shards.write_shards` has each)."""

    filters: CellFilters
    index: Location | None = None
    index_columns: dict[str, str | None] | None = None
    bands: Sequence[str] | None = None
    patch_size: int = 256
    max_cloud: float | None = None
    season: int | None = None


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


class Reader:
    """One input layout of ``satclip shards``. Its tasks have an ``encode(payload, bands) -> Encoded``
    method, run in the worker processes. The defaults: a layout of files, read by no folder."""

    name: str
    """What the layout is, as the error for unusable inputs lists it (e.g. "tar files (.tar, ...)")."""
    suffixes: tuple[str, ...] = ()
    """How its files' names end (a URL ending in none of the readers' is a folder)."""
    in_folder_url: str | None = None
    """What it looks for in a folder URL, as the error for a folder URL holding none lists it; None: its
    inputs are local paths only."""
    selects_rows: bool = False
    """Whether it takes row selection (--bbox, --region, ..., :class:`~satclip.data.cellselect.CellFilters`)."""

    def whole(self, location: Location, options: ReadOptions) -> Collected | None:
        """The tasks of ``location`` given alone as a whole (a local folder, a :class:`FolderUrl`, a
        dataset's index), None when it is no such input of this layout."""
        return None

    def detect(self, location: Location) -> bool:
        """Whether one file or URL is an input of this layout (nothing but its name or schema read)."""
        return False

    def collect(self, inputs: Sequence[Location], options: ReadOptions) -> Collected:
        """The tasks of ``inputs``, every one of them detected by :meth:`detect` (so never called on
        a reader that detects no file)."""
        raise NotImplementedError(f"{self.name}: reads no files")

    def why_not(self, location: Location) -> str | None:
        """Why ``location``, which looks like this layout, is none (None: no reason to give)."""
        return None


@dataclass
class Encoded:
    """A task's output: ``samples`` (key, payload bytes, JSON record) in order; ``skipped``: corrupt
    input counted by kind with (source, cause) of each; ``filtered``: patches left out on purpose
    (``cloud``: over ``--max-cloud``), counted by kind."""

    samples: list[tuple[str, bytes, dict]] = field(default_factory=list)
    skipped: list[tuple[str, str, str]] = field(default_factory=list)
    filtered: dict[str, int] = field(default_factory=dict)

    @classmethod
    def skip(cls, kind: str, source: str, *, cause: str) -> Encoded:
        return cls(skipped=[(kind, source, cause)])


def sample_key(text: str) -> str:
    """A WebDataset sample key: dots become '_' (WebDataset splits the extension at the first dot)."""
    return text.replace(".", "_")


def sample_record(lon: float, lat: float, *, seconds: float, source: str, crs: str | None, bands: tuple[str, ...], array: np.ndarray, **extra: object) -> dict:
    """The JSON record of one sample: {lon, lat, [time, doy], source, crs, bands, shape, dtype, **extra}."""
    return {
        "lon": lon,
        "lat": lat,
        **time_record(seconds),
        "source": source,
        "crs": crs,
        "bands": list(bands),
        "shape": list(array.shape),
        "dtype": str(array.dtype),
        **extra,
    }


def payload_bytes(array: np.ndarray, payload: str, *, source: str) -> bytes:
    """``array`` as a payload: ``s2c`` always works; ``tif`` is only possible where the source is one GeoTIFF."""
    if payload != "s2c":
        raise ShardInputError(f"{source}: payload {payload!r} keeps a source GeoTIFF's bytes; this input is assembled from several, use --payload s2c")
    return encode_fast(array)


__all__ = [
    "SHOWN_PER_KIND",
    "Collected",
    "Encoded",
    "FolderUrl",
    "Location",
    "ReadOptions",
    "Reader",
    "ShardInputError",
    "WorkerDiedError",
    "payload_bytes",
    "sample_key",
    "sample_record",
]
