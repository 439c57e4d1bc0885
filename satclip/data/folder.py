"""One evaluation pass over images: WebDataset shards, or a folder of GeoTIFFs read in place.

:func:`eval_stream` gives a :class:`~satclip.data.pipeline.ShardStream` in evaluation mode (centre
crop, no augmentation, no shuffling, input order kept with at most one worker) over either
input. A folder is listed as ``satclip shards`` lists it (an S2-100K ``index.csv`` and
``images/``, or every ``*.tif`` / ``*.tiff`` below it with coordinates from each file's
georeference); each file is read as a one-sample shard, so decoding, checks, skip counts and
batching are the loader's own.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from pathlib import Path

from .bands import S2_BANDS
from .errors import SkipCounter
from .geotiffs import TIF_SUFFIXES
from .inputs import collect_tasks
from .pipeline import ShardStream, build_pipeline
from .samples import SampleDecoder
from .shardplan import ShardWatch


def is_tif_folder(path: str | Path) -> bool:
    """A directory holding GeoTIFFs (below it) rather than shards."""
    path = Path(path)
    return path.is_dir() and not (path / "manifest.json").is_file() and any(p.suffix.lower() in TIF_SUFFIXES for p in path.rglob("*"))


class FolderStream(ShardStream):
    """A :class:`ShardStream` whose "shards" are GeoTIFF files of one sample each."""

    def __init__(self, tasks: Sequence, decoder: SampleDecoder, *, batch_size: int) -> None:
        super().__init__([t.path for t in tasks], decoder, batch_size=batch_size, counts={t.path: 1 for t in tasks})
        self.tasks = {t.path: t for t in tasks}

    def _raw_samples(self, shards: Iterator[str], watch: ShardWatch, *, counter: SkipCounter) -> Iterator[tuple[dict, int]]:
        for read, url in enumerate(shards):
            task = self.tasks[url]
            try:
                data = Path(url).read_bytes()
            except OSError as err:
                counter.record("shard", url, key=task.key, cause=f"unreadable: {err}")
                watch.read_done(read, url, size=0)
                continue
            raw = {"__key__": task.key, "__url__": url, "tif": data}
            if task.lonlat is not None:
                raw["json"] = json.dumps({"lon": task.lonlat[0], "lat": task.lonlat[1]}).encode()
            yield raw, read
            watch.read_done(read, url, size=1)


def eval_stream(
    source: str | Path,
    *,
    batch_size: int = 64,
    crop_size: int | None = 224,
    bands: Sequence[str] | None = None,
    insert_b10: bool = True,
    require_coords: bool = False,
) -> ShardStream:
    """An evaluation pass over shards (a folder with ``manifest.json`` or ``*.tar``, a pattern) or a GeoTIFF folder.

    ``require_coords=False``: samples without coordinates get NaN instead of being skipped.
    """
    if is_tif_folder(source):
        tasks = collect_tasks([source]).tasks
        decoder = SampleDecoder(
            crop_size=crop_size, bands=tuple(bands) if bands else None, insert_b10=insert_b10, source_bands=S2_BANDS, require_coords=require_coords
        )
        return FolderStream(list(tasks), decoder, batch_size=batch_size)
    stream = build_pipeline(
        str(source), batch_size=batch_size, train=False, split_by_rank=False, crop_size=crop_size, bands=bands, insert_b10=insert_b10, rank=0, world_size=1
    )
    stream.decoder.require_coords = require_coords
    return stream


def stream_size(stream: ShardStream) -> int | None:
    """Samples in one pass, when known (manifest counts, or one per file)."""
    return sum(stream.counts[u] for u in stream.urls) if stream.counts else None


__all__ = ["FolderStream", "eval_stream", "is_tif_folder", "stream_size"]
