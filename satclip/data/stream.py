"""The streaming loader: WebDataset shards of Sentinel-2 patches -> batches of (image, lonlat).

Layers, bottom to top:

- :func:`expand_urls` turns a directory (its ``manifest.json``), a brace pattern
  (``shard-{000000..000099}.tar``), a list, ``http(s)://`` or ``pipe:`` URLs into a shard list.
- :func:`iter_tar` / :func:`iter_shard` read one shard (opened with WebDataset's ``gopen``) and
  group its members into samples. The tar reader is our own so that a truncated or garbage tar is
  detected and named exactly (Python's ``tarfile`` in stream mode ends silently at a bad header).
- :class:`SampleDecoder` decodes the payload, checks bands, size and coordinates, reorders bands
  and crops. Anything wrong is skipped and counted by kind (:mod:`satclip.data.errors`).
- :class:`ShardStream` (an ``IterableDataset``, built by :func:`build_pipeline`) runs in each
  DataLoader worker: shard selection, shuffle buffer, batching, augmentation.
- :class:`StreamLoader` wraps the DataLoader: sums the workers' skip counts into every batch,
  forwards Lightning's ``set_epoch`` to the workers and fails loudly when nothing arrives.
- :class:`SatCLIPDataModule` wires it for LightningCLI.

Keeping ranks in step (DDP hangs when one rank runs more steps than another): training draws
shards with replacement (``resample=True``), or cycles each worker's share (``resample=False``),
and every worker stops after the same number of batches, ``ceil(epoch_length / (batch_size *
num_workers))``, so every rank runs exactly that many times ``num_workers`` steps whatever its
shards hold. Seeds come from (seed, global rank, worker id, epoch). Evaluation makes one pass
without augmentation; by default every rank reads the whole validation set (identical step
counts, exact metrics on every rank).
"""

from __future__ import annotations

import csv
import gzip
import itertools
import json
import logging
import math
import multiprocessing
import os
import random
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlparse

import lightning.pytorch as L
import numpy as np
import torch
from torch.utils.data import DataLoader, IterableDataset

from .errors import SKIP_KINDS, EmptyStreamError, SkipCounter, add_counts, format_counts
from .payload import PAYLOAD_EXTENSIONS, decode
from .shards import read_index
from .transforms import (
    S2_BANDS,
    Augment,
    band_indices,
    crop,
    crop_offsets,
    finish_batch,
    select_bands,
    target_bands,
    to_reflectance,
)

log = logging.getLogger("satclip.data")

MANIFEST = "manifest.json"


# ----------------------------------------------------------------------------- shard lists


def _is_local(url: str) -> bool:
    return urlparse(url).scheme in ("", "file")


def _local_path(url: str) -> Path:
    return Path(urlparse(url).path if url.startswith("file:") else url)


def expand_urls(urls: str | Sequence[str]) -> list[str]:
    """Shard URLs from a directory (its ``manifest.json``, else its ``*.tar``), a brace pattern,
    a ``::``-separated string or a list of any of these. Local shards must exist; ``http(s)://``
    and ``pipe:`` URLs are passed through untouched."""
    from webdataset.shardlists import expand_urls as wds_expand

    items = [urls] if isinstance(urls, (str, os.PathLike)) else list(urls)
    out: list[str] = []
    for item in map(str, items):
        if _is_local(item) and _local_path(item).is_dir():
            out += _directory_shards(_local_path(item))
        else:
            out += wds_expand(item)
    if not out:
        raise ValueError(f"no shards matched {urls!r}")
    missing = [u for u in out if _is_local(u) and not _local_path(u).is_file()]
    if missing:
        raise FileNotFoundError(f"{len(missing)} of {len(out)} shards of {urls!r} do not exist; first: {missing[0]}")
    return out


def _directory_shards(directory: Path) -> list[str]:
    manifest = directory / MANIFEST
    if manifest.is_file():
        return [str(directory / s["name"]) for s in json.loads(manifest.read_text())["shards"]]
    shards = sorted(p for p in directory.iterdir() if p.name.endswith((".tar", ".tar.gz", ".tgz")))
    if not shards:
        raise ValueError(f"{directory}: a directory of shards needs a {MANIFEST} or *.tar files; found neither")
    return [str(p) for p in shards]


def read_manifest(urls: Sequence[str]) -> tuple[dict[str, int] | None, tuple[str, ...] | None]:
    """Sample count per shard and band order from the ``manifest.json`` beside local shards.

    Returns (None, None) where unknown (remote shards, no manifest, a shard not listed)."""
    counts: dict[str, int] = {}
    bands = None
    manifests: dict[Path, dict] = {}
    for url in urls:
        if not _is_local(url):
            return None, None
        path = _local_path(url)
        if path.parent not in manifests:
            file = path.parent / MANIFEST
            manifests[path.parent] = json.loads(file.read_text()) if file.is_file() else {}
        manifest = manifests[path.parent]
        listed = {s["name"]: int(s["samples"]) for s in manifest.get("shards", [])}
        if path.name not in listed:
            return None, None
        counts[url] = listed[path.name]
        bands = bands or tuple(manifest.get("bands") or ()) or None
    return counts, bands


def _to_float(value: object) -> float:
    try:
        return float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return math.nan


# ----------------------------------------------------------------------------- tar reading


class ShardError(Exception):
    """A shard is truncated, is not a tar, or could not be read; ``member``: the file being read."""

    def __init__(self, message: str, member: str | None = None) -> None:
        super().__init__(message)
        self.member = member


_BLOCK = 512
_ZERO_BLOCK = bytes(_BLOCK)


def _read_exact(stream, n: int) -> bytes:
    chunks, got = [], 0
    while got < n:
        chunk = stream.read(n - got)
        if not chunk:
            break
        chunks.append(chunk)
        got += len(chunk)
    return b"".join(chunks)


def _header_number(field: bytes) -> int:
    if field[0] & 0x80:  # GNU base-256 for large values
        return int.from_bytes(field[1:], "big")
    text = field.split(b"\0", 1)[0].strip()
    return int(text, 8) if text else 0


def _parse_pax(data: bytes) -> dict[str, str]:
    records, pos = {}, 0
    while pos < len(data):
        space = data.index(b" ", pos)
        length = int(data[pos:space])
        key, _, value = data[space + 1 : pos + length - 1].partition(b"=")
        records[key.decode("utf-8")] = value.decode("utf-8", "surrogateescape")
        pos += length
    return records


def iter_tar(stream) -> Iterator[tuple[str, bytes]]:
    """(name, bytes) of each regular file in a tar stream, in order (ustar, pax and GNU long names).

    Raises :class:`ShardError` naming the byte offset when the stream ends before the
    end-of-archive marker (truncated) or a header is invalid (garbage)."""
    offset = 0
    long_name: str | None = None
    pax: dict[str, str] = {}
    while True:
        header = _read_exact(stream, _BLOCK)
        if not header and offset == 0:
            raise ShardError("empty: no data at all")
        if len(header) < _BLOCK:
            where = "at a member boundary" if not header else "inside a header"
            raise ShardError(f"truncated tar: the data ends {where} at byte {offset + len(header)}, before the end-of-archive marker")
        if header == _ZERO_BLOCK:
            return
        try:
            stored = _header_number(header[148:156])
            size = int(pax["size"]) if "size" in pax else _header_number(header[124:136])
        except (ValueError, KeyError) as exn:
            raise ShardError(f"not a tar archive: invalid header at byte {offset} ({exn})") from None
        unsigned = sum(header[:148]) + 8 * 32 + sum(header[156:])
        if stored != unsigned and stored != unsigned - 256 * sum(b > 127 for b in header[:148] + header[156:]):
            raise ShardError(f"not a tar archive: header checksum mismatch at byte {offset}")
        kind = header[156:157]
        name = header[:100].split(b"\0", 1)[0].decode("utf-8", "surrogateescape")
        prefix = header[345:500].split(b"\0", 1)[0].decode("utf-8", "surrogateescape")
        if header[257:262] == b"ustar" and prefix:
            name = f"{prefix}/{name}"
        name = pax.get("path", long_name or name)
        padded = size + (-size) % _BLOCK
        data = _read_exact(stream, padded)
        if len(data) < padded:
            raise ShardError(
                f"truncated tar: member {name!r} at byte {offset} needs {padded} bytes, only {len(data)} left", name
            )
        data = data[:size]
        offset += _BLOCK + padded
        if kind == b"x":
            pax = _parse_pax(data)
            continue
        if kind == b"L":
            long_name = data.split(b"\0", 1)[0].decode("utf-8", "surrogateescape")
            continue
        long_name, pax = None, {}
        if kind in (b"0", b"\0", b"7"):
            yield name, data


def _split_name(name: str) -> tuple[str, str] | None:
    """WebDataset's key/extension split: key up to the first dot of the base name."""
    directory, _, base = name.rpartition("/")
    if base.startswith("__") and base.endswith("__"):
        return None
    stem, dot, ext = base.partition(".")
    if not dot or not stem:
        return None
    return (f"{directory}/{stem}" if directory else stem), ext.lower()


def iter_shard(url: str, counter: SkipCounter) -> Iterator[dict]:
    """Raw samples ``{"__key__", "__url__", ext: bytes, ...}`` of one shard. An unreadable rest
    of the shard (open failure, truncation, garbage) is counted once as a ``shard`` skip."""
    from webdataset.gopen import gopen

    key = None
    try:
        source = gopen(url, "rb")
    except Exception as exn:  # noqa: BLE001 - any failure to open a shard is data, not a bug
        counter.record("shard", url, None, f"cannot open: {exn!r}")
        return
    stream = gzip.GzipFile(fileobj=source) if url.endswith((".gz", ".tgz")) else source
    current: dict | None = None
    closed = False
    try:
        for name, data in iter_tar(stream):
            split = _split_name(name)
            if split is None:
                continue
            key, ext = split
            if current is not None and key != current["__key__"]:
                yield current
                current = None
            if current is None:
                current = {"__key__": key, "__url__": url}
            current[ext] = data
        if current is not None:
            yield current
    except Exception as exn:  # noqa: BLE001 - truncated, garbage, network or pipe errors
        failed = _split_name(exn.member) if isinstance(exn, ShardError) and exn.member else None
        complete = current if current is not None and failed and failed[0] != current["__key__"] else None
        closing, closed = _close(source), True
        cause = f"{exn}" + (f"; {closing}" if closing else "")
        counter.record("shard", url, failed[0] if complete else key, f"{cause} (rest of shard skipped)")
        if complete is not None:
            yield complete  # the truncation hit the next sample's first member: this one is whole
    finally:
        if not closed and (closing := _close(source)):
            log.debug("%s: %s", url, closing)


def _close(stream) -> str | None:
    """Close a shard stream; a ``pipe:`` command's failure (its exit status) is returned as text."""
    try:
        stream.close()
    except Exception as exn:  # noqa: BLE001 - e.g. "exit 1" of the pipe's command
        return f"closing the stream: {exn}"
    return None


# ----------------------------------------------------------------------------- samples


class Skip(Exception):
    """A sample is unusable; ``kind`` is one of SKIP_KINDS."""

    def __init__(self, kind: str, cause: str) -> None:
        super().__init__(cause)
        self.kind = kind


def check_lonlat(lon: float, lat: float) -> str | None:
    """Why (lon, lat) in degrees is not a usable sample coordinate, or None when it is."""
    if not (math.isfinite(lon) and math.isfinite(lat)):
        return f"non-finite coordinates lon={lon}, lat={lat}"
    if abs(lon) > 180 or abs(lat) > 90:
        return f"coordinates out of range lon={lon}, lat={lat} (expected degrees, lon in [-180, 180], lat in [-90, 90])"
    return None


@dataclass
class SampleDecoder:
    """Raw sample -> cropped image, band plan, lonlat (2,) float64, key; raises :class:`Skip`.

    Bands come from the sample's JSON record, else ``source_bands`` (the manifest's, else
    S2-100K's). Coordinates: the JSON record, else ``index`` (``index.csv`` as read by
    :func:`satclip.data.shards.read_index`: file name -> (lon, lat)), else the tif's
    own georeference. ``crop_size`` None keeps the full image (all must then share one size)."""

    crop_size: int | None = 224
    bands: tuple[str, ...] | None = None
    insert_b10: bool = False
    source_bands: tuple[str, ...] = S2_BANDS
    index: dict[str, tuple[float, float]] | None = None

    def __post_init__(self) -> None:
        self._plans: dict[tuple[str, ...], np.ndarray] = {}
        self.output_bands = target_bands(self.source_bands, self.bands, self.insert_b10)
        self._plan(self.source_bands)  # a bad band list fails here, not in the workers

    def _plan(self, source: tuple[str, ...]) -> np.ndarray:
        if source not in self._plans:
            target = target_bands(source, self.bands, self.insert_b10)
            if target != self.output_bands:
                raise Skip("shape", f"bands {list(source)} give {list(target)}, other samples {list(self.output_bands)}")
            self._plans[source] = band_indices(source, target)
        return self._plans[source]

    def __call__(self, raw: dict, rng: np.random.Generator | None) -> tuple[np.ndarray, np.ndarray, np.ndarray, str]:
        """Decode and check one raw sample: (cropped view (C, h, w) uint16, band indices for
        :func:`select_bands`, lonlat, key). ``rng`` None gives the centre crop (evaluation)."""
        key = raw["__key__"]
        ext = next((e for e in PAYLOAD_EXTENSIONS if e in raw), None)
        if ext is None:
            found = sorted(k for k in raw if not k.startswith("__"))
            raise Skip("incomplete", f"no image payload ({'/'.join(PAYLOAD_EXTENSIONS)}); the sample has {found}")
        meta = self._meta(raw)
        try:
            image = decode(ext, raw[ext])
        except Exception as exn:  # noqa: BLE001 - PayloadError, or anything GDAL raises on garbage
            raise Skip("decode", f"{ext}: {exn}") from None
        source = tuple(meta.get("bands") or self.source_bands)
        self._check_shape(image, source, meta)
        lonlat = np.array(self._lonlat(key, ext, raw, meta), dtype=np.float64)
        if self.crop_size is not None:
            top, left = crop_offsets(image.shape[1], image.shape[2], self.crop_size, rng)
            image = crop(image, self.crop_size, top, left)
        return image, self._plan(source), lonlat, key

    @staticmethod
    def _meta(raw: dict) -> dict:
        if "json" not in raw:
            return {}
        try:
            meta = json.loads(raw["json"])
        except (ValueError, UnicodeDecodeError) as exn:
            raise Skip("incomplete", f"json record does not parse: {exn}") from None
        if not isinstance(meta, dict):
            raise Skip("incomplete", f"json record is a {type(meta).__name__}, expected an object")
        return meta

    def _check_shape(self, image: np.ndarray, source: tuple[str, ...], meta: dict) -> None:
        if image.dtype != np.uint16:
            raise Skip("shape", f"dtype {image.dtype}, expected uint16 digital numbers")
        if image.ndim != 3 or image.shape[0] != len(source):
            raise Skip("shape", f"shape {image.shape}, expected {len(source)} bands {list(source)}")
        if meta.get("shape") is not None and tuple(meta["shape"]) != image.shape:
            raise Skip("shape", f"shape {image.shape}, but its record says {tuple(meta['shape'])}")
        if self.crop_size is not None and min(image.shape[1:]) < self.crop_size:
            raise Skip("shape", f"size {image.shape[1]}x{image.shape[2]} is smaller than the crop {self.crop_size}")

    def _lonlat(self, key: str, ext: str, raw: dict, meta: dict) -> tuple[float, float]:
        if "lon" in meta or "lat" in meta:
            lon, lat = _to_float(meta.get("lon")), _to_float(meta.get("lat"))
        elif self.index is not None:
            name = f"{key.rpartition('/')[2]}.{ext}"
            if name not in self.index:
                raise Skip("coords", f"no json record and {name!r} is not in the index")
            lon, lat = self.index[name]
        elif ext == "tif":
            from ..geo import lonlat_from_georeference

            try:
                lon, lat = lonlat_from_georeference(raw[ext])
            except Exception as exn:  # noqa: BLE001 - no CRS, no transform, PROJ failure
                raise Skip("coords", f"no json record, no index, and no usable georeference: {exn}") from None
        else:
            raise Skip("coords", "no coordinates: no json record, no index, and the payload has no georeference")
        problem = check_lonlat(lon, lat)
        if problem:
            raise Skip("coords", problem)
        return lon, lat


# ----------------------------------------------------------------------------- the stream


def _rank_info() -> tuple[int, int]:
    """(global rank, world size) from torch.distributed, else the RANK / WORLD_SIZE variables."""
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_rank(), torch.distributed.get_world_size()
    return int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1))


def _worker_info() -> tuple[int, int]:
    info = torch.utils.data.get_worker_info()
    return (info.id, info.num_workers) if info is not None else (0, 1)


def _shuffled(items: Iterable, size: int, rng: random.Random) -> Iterator:
    """A shuffle buffer: fill ``size`` items, then emit a random one for each new item."""
    buffer: list = []
    for item in items:
        if len(buffer) < size:
            buffer.append(item)
            continue
        i = rng.randrange(size)
        yield buffer[i]
        buffer[i] = item
    rng.shuffle(buffer)
    yield from buffer


class ShardStream(IterableDataset):
    """Batches from WebDataset shards, for one rank; each DataLoader worker reads its own part.

    Modes (see the module docstring): ``resample=True`` (training, infinite shard draws with
    replacement, ``epoch_length`` required); ``resample=False`` with ``epoch_length`` (shards split
    by rank and worker, each worker cycles its share); ``epoch_length=None`` (one pass, shards
    split by worker and, with ``split_by_rank``, by rank). With an epoch length every worker
    yields exactly :meth:`batches_per_worker` full batches.

    Batches are dicts: ``image`` (B, C, H, W) float32 reflectance (uint16 digital numbers with
    ``keep_uint16``), ``lonlat`` (B, 2) float64 [lon, lat] degrees, ``key`` list of str,
    ``skipped`` {kind: count} of this worker in this epoch, ``worker`` its id.
    """

    def __init__(
        self,
        urls: Sequence[str],
        decoder: SampleDecoder,
        batch_size: int,
        augment: Augment | None = None,
        resample: bool = False,
        epoch_length: int | None = None,
        shuffle_buffer: int = 0,
        split_by_rank: bool = True,
        keep_uint16: bool = False,
        seed: int = 0,
        rank: int = 0,
        world_size: int = 1,
        counts: dict[str, int] | None = None,
    ) -> None:
        super().__init__()
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        if resample and not epoch_length:
            raise ValueError("resample=True draws shards forever: set epoch_length (samples per epoch per rank)")
        if epoch_length is None and split_by_rank and world_size > 1 and augment is not None:
            raise ValueError(
                "training on several ranks needs an epoch_length, or ranks with uneven shards run different "
                "numbers of steps and DDP hangs; set epoch_length (samples per epoch per rank)"
            )
        if not 0 <= rank < world_size:
            raise ValueError(f"rank {rank} is not in [0, {world_size})")
        self.urls = list(urls)
        self.decoder = decoder
        self.batch_size = batch_size
        self.augment = augment
        self.resample = resample
        self.epoch_length = epoch_length
        self.shuffle_buffer = shuffle_buffer
        self.split_by_rank = split_by_rank
        self.keep_uint16 = keep_uint16
        self.seed = seed
        self.rank = rank
        self.world_size = world_size
        self.counts = counts
        self.trailer = False  # StreamLoader sets this: a last item per worker carries its final counts
        self._epoch = multiprocessing.RawValue("q", 0)  # shared with persistent workers

    # -- epochs and sizes

    @property
    def epoch(self) -> int:
        return int(self._epoch.value)

    def set_epoch(self, epoch: int) -> None:
        """Select the epoch (reseeds shard draws, shuffling and augmentation); seen by all workers."""
        self._epoch.value = int(epoch)

    def batches_per_worker(self, num_workers: int) -> int | None:
        """Batches each worker yields per epoch when an epoch length is set, else None."""
        if self.epoch_length is None:
            return None
        return math.ceil(self.epoch_length / (self.batch_size * max(1, num_workers)))

    def num_batches(self, num_workers: int) -> int | None:
        """Batches this rank yields per epoch with ``num_workers`` DataLoader workers (None: unknown)."""
        per_worker = self.batches_per_worker(num_workers)
        if per_worker is not None:
            return per_worker * max(1, num_workers)
        if self.counts is None:
            return None
        total = 0
        for worker in range(max(1, num_workers)):
            samples = sum(self.counts[u] for u in self._share(self._ordered(), worker, max(1, num_workers)))
            total += math.ceil(samples / self.batch_size)
        return total

    def check_workers(self, num_workers: int) -> None:
        """Fail early when a cycling (resample=False, epoch_length) worker would get no shard."""
        if self.resample or self.epoch_length is None:
            return
        needed = (self.world_size if self.split_by_rank else 1) * max(1, num_workers)
        if len(self.urls) < needed:
            raise ValueError(
                f"resample=False with an epoch_length gives every worker of every rank its own shards: "
                f"{len(self.urls)} shards for {needed} workers in all; use resample=True or more shards"
            )

    # -- iteration

    def _share(self, urls: list[str], worker: int, num_workers: int) -> list[str]:
        if self.split_by_rank:
            urls = urls[self.rank :: self.world_size]
        return urls[worker::num_workers]

    def _ordered(self) -> list[str]:
        """This epoch's shard order: as given, or, for training without resampling, one shuffled
        order common to all ranks (so their shares stay disjoint)."""
        if self.resample or self.augment is None:
            return self.urls
        urls = list(self.urls)
        random.Random(_seed_int(self.seed, self.epoch)).shuffle(urls)
        return urls

    def _shard_plan(self, worker: int, num_workers: int, rng: random.Random) -> tuple[Iterator[str], set[str]]:
        """(the shards this worker reads, in order; the distinct shards it can ever read)."""
        if self.resample:
            return (rng.choice(self.urls) for _ in itertools.count()), set(self.urls)
        share = self._share(self._ordered(), worker, num_workers)
        if self.epoch_length is None:
            return iter(share), set(share)
        if not share:
            raise ValueError(f"rank {self.rank} worker {worker} has no shard to cycle ({len(self.urls)} shards)")
        return itertools.chain.from_iterable(itertools.repeat(share)), set(share)

    def _samples(
        self, shards: Iterator[str], candidates: set[str], counter: SkipCounter, rng: np.random.Generator
    ) -> Iterator[tuple]:
        dead: set[str] = set()
        seen_good = False
        for url in shards:
            good = 0
            for raw in iter_shard(url, counter):
                try:
                    sample = self.decoder(raw, rng if self.augment is not None else None)
                except Skip as skip:
                    counter.record(skip.kind, url, raw["__key__"], skip)
                    continue
                good += 1
                yield sample
            seen_good = seen_good or good > 0
            if not good and self.epoch_length is not None:
                dead.add(url)
                if not seen_good and dead >= candidates:
                    raise EmptyStreamError(
                        f"rank {self.rank}: none of the {len(dead)} shards this worker reads yields a valid sample "
                        f"(skipped: {format_counts(counter.counts)}); first: {sorted(dead)[0]}. "
                        "The 'satclip.data' warnings above give each cause."
                    )

    def _batches(self, samples: Iterator[tuple], counter: SkipCounter, generator: torch.Generator) -> Iterator[dict]:
        pending: list[tuple] = []
        shape = None
        for sample in samples:
            image, indices, _, key = sample
            shape = shape or (len(indices),) + image.shape[1:]
            if (len(indices),) + image.shape[1:] != shape:
                counter.record("shape", "(batch)", key, f"size {image.shape} differs from {shape} (set crop_size)")
                continue
            pending.append(sample)
            if len(pending) == self.batch_size:
                yield self._assemble(pending, shape, generator)
                pending = []
        if pending:
            yield self._assemble(pending, shape, generator)

    def _assemble(self, samples: list[tuple], shape: tuple[int, ...], generator: torch.Generator) -> dict:
        """Collate samples: uint16 (``keep_uint16``), or reflectance augmented sample by sample."""
        lonlat = torch.from_numpy(np.stack([s[2] for s in samples]))
        if self.keep_uint16:
            out = np.empty((len(samples), *shape), dtype=np.uint16)
            for i, (image, indices, _, _) in enumerate(samples):
                select_bands(image, indices, out=out[i])
            images = torch.from_numpy(out)
        else:
            images = torch.empty((len(samples), *shape), dtype=torch.float32)
            scratch = np.empty(shape, dtype=np.uint16)
            for i, (image, indices, _, _) in enumerate(samples):
                one = to_reflectance(torch.from_numpy(select_bands(image, indices, out=scratch))[None])
                images[i] = self.augment.images(one, generator)[0] if self.augment is not None else one[0]
            if self.augment is not None:
                lonlat = self.augment.coords(lonlat, generator)
        return {"image": images, "lonlat": lonlat, "key": [s[3] for s in samples]}

    def __iter__(self) -> Iterator[dict]:
        worker, num_workers = _worker_info()
        epoch = self.epoch
        state = np.random.SeedSequence([self.seed, self.rank, worker, epoch]).generate_state(3)
        py_rng, np_rng = random.Random(int(state[0])), np.random.default_rng(int(state[1]))
        generator = torch.Generator().manual_seed(int(state[2]))
        counter = SkipCounter(where=f"[rank {self.rank} worker {worker}] ")
        shards, candidates = self._shard_plan(worker, num_workers, py_rng)
        samples = self._samples(shards, candidates, counter, np_rng)
        if self.shuffle_buffer > 1:
            samples = _shuffled(samples, self.shuffle_buffer, py_rng)
        limit = self.batches_per_worker(num_workers)
        produced = 0
        for batch in self._batches(samples, counter, generator):
            batch["skipped"] = counter.snapshot()
            batch["worker"] = worker
            yield batch
            produced += 1
            if produced == limit:
                break
        if self.trailer:
            yield {"skipped": counter.snapshot(), "worker": worker, "trailer": True}
        elif produced == 0 and num_workers == 1 and (self.world_size == 1 or not self.split_by_rank):
            raise EmptyStreamError(self.empty_message(counter.counts))

    def empty_message(self, counts: dict[str, int]) -> str:
        """Why a pass gave no batch: shard count, first shard, skip counts by kind."""
        where = f"rank {self.rank} of {self.world_size}: " if self.world_size > 1 else ""
        return (
            f"{where}no sample from {len(self.urls)} shards (first: {self.urls[0]}); "
            f"skipped: {format_counts(counts)}. The 'satclip.data' warnings give each cause"
            + (" (more ranks than shards?)" if self.split_by_rank and self.world_size > len(self.urls) else "")
        )


def _seed_int(*parts: int) -> int:
    return int(np.random.SeedSequence(list(parts)).generate_state(1)[0])


def build_pipeline(
    urls: str | Sequence[str],
    *,
    batch_size: int = 256,
    train: bool = True,
    resample: bool = True,
    epoch_length: int | None = None,
    shuffle_buffer: int = 256,
    split_by_rank: bool = True,
    crop_size: int | None = 224,
    bands: Sequence[str] | None = None,
    insert_b10: bool = True,
    augment: Augment | None = None,
    keep_uint16: bool = False,
    index_csv: str | os.PathLike | None = None,
    seed: int = 0,
    rank: int | None = None,
    world_size: int | None = None,
) -> ShardStream:
    """The plain builder: a :class:`ShardStream` over ``urls`` (a directory, brace pattern, list,
    ``http(s)://`` or ``pipe:`` URLs).

    ``train=True``: random crops, ``augment`` (default :class:`Augment`), shuffle buffer, and
    ``resample`` (shards with replacement) with ``epoch_length`` samples per rank (default: the
    manifest's sample count / world size). ``train=False``: one pass, centre crop, no augmentation,
    no shuffling, no resampling. ``rank``/``world_size`` default to torch.distributed's (or the
    RANK/WORLD_SIZE variables). Wrap it in :class:`StreamLoader` to get counted skips and epochs.
    """
    shards = expand_urls(urls)
    counts, manifest_bands = read_manifest(shards)
    detected_rank, detected_world = _rank_info()
    rank = detected_rank if rank is None else rank
    world_size = detected_world if world_size is None else world_size
    if train and epoch_length is None and (resample or world_size > 1):
        if counts is None:
            raise ValueError(f"{urls!r}: no manifest.json with sample counts; set epoch_length (samples per epoch per rank)")
        epoch_length = max(1, sum(counts.values()) // world_size)
    decoder = SampleDecoder(
        crop_size=crop_size,
        bands=tuple(bands) if bands is not None else None,
        insert_b10=insert_b10,
        source_bands=manifest_bands or S2_BANDS,
        index=read_index(index_csv) if index_csv else None,
    )
    return ShardStream(
        shards,
        decoder,
        batch_size,
        augment=(augment or Augment()) if train else None,
        resample=resample and train,
        epoch_length=epoch_length if train else None,
        shuffle_buffer=shuffle_buffer if train else 0,
        split_by_rank=split_by_rank,
        keep_uint16=keep_uint16,
        seed=seed,
        rank=rank,
        world_size=world_size,
        counts=counts,
    )


# ----------------------------------------------------------------------------- the loader


class StreamLoader:
    """A DataLoader over a :class:`ShardStream` that the training loop can trust.

    - every batch's ``skipped`` is the total {kind: count} over all workers since this loader was
      created (also :attr:`skipped`), including skips after a worker's last batch;
    - ``len()`` is the number of batches per epoch when known (always with an epoch length);
    - Lightning calls ``loader.sampler.set_epoch(epoch)`` at each epoch start: it reseeds the
      workers (persistent ones too);
    - an epoch with no batch at all raises :class:`EmptyStreamError` saying why.
    """

    def __init__(
        self,
        dataset: ShardStream,
        num_workers: int = 0,
        pin_memory: bool = False,
        persistent_workers: bool = True,
        prefetch_factor: int | None = None,
    ) -> None:
        dataset.check_workers(num_workers)
        dataset.trailer = True
        self.stream = dataset  # not named `dataset`: Lightning would take us for a DataLoader over an IterableDataset
        self.num_workers = num_workers
        self.loader = DataLoader(
            dataset,
            batch_size=None,
            num_workers=num_workers,
            pin_memory=pin_memory,
            persistent_workers=persistent_workers and num_workers > 0,
            prefetch_factor=prefetch_factor if num_workers > 0 else None,
        )
        self._base = dict.fromkeys(SKIP_KINDS, 0)
        self._latest: dict[int, dict[str, int]] = {}

    batch_sampler = None  # Lightning's shuffle check reads it (no batch sampler: batches come whole)

    @property
    def sampler(self) -> StreamLoader:
        """Lightning looks for ``set_epoch`` on ``dataloader.sampler``; it is ours."""
        return self

    def set_epoch(self, epoch: int) -> None:
        self.stream.set_epoch(epoch)

    @property
    def skipped(self) -> dict[str, int]:
        """Skips by kind over all workers and epochs so far."""
        total = dict(self._base)
        for counts in self._latest.values():
            total = add_counts(total, counts)
        return total

    def __len__(self) -> int:
        n = self.stream.num_batches(self.num_workers)
        if n is None:
            raise TypeError("the number of batches is unknown (no epoch_length and no manifest.json with sample counts)")
        return n

    def __iter__(self) -> Iterator[dict]:
        self._base, self._latest = self.skipped, {}  # worker counts restart each epoch
        produced = 0
        for item in self.loader:
            self._latest[item.pop("worker")] = item.pop("skipped")
            if item.pop("trailer", False):
                continue
            item["skipped"] = self.skipped
            produced += 1
            yield item
        if produced == 0:
            raise EmptyStreamError(self.stream.empty_message(self.skipped))


# ----------------------------------------------------------------------------- Lightning


class SatCLIPDataModule(L.LightningDataModule):
    """Training and validation shards for LightningCLI (``data:`` section of a config).

    Training: random crop, flips, blur, coordinate jitter, shuffle buffer; ``resample=True`` draws
    shards with replacement and every rank runs ``ceil(epoch_length / (batch_size * max(1,
    num_workers))) * max(1, num_workers)`` steps per epoch (``epoch_length``: samples per epoch per
    rank; default the manifest's total / world size). Validation: one pass, centre crop, no
    augmentation; every rank reads the whole set unless ``val_split_by_rank``. ``keep_uint16``
    sends uint16 batches through the workers and pinned memory (half the bytes of float32) and
    scales and augments them on the device in :meth:`on_after_batch_transfer`; None (default):
    on when the trainer runs on a GPU.
    """

    def __init__(
        self,
        train_urls: str | list[str] | None = None,
        val_urls: str | list[str] | None = None,
        batch_size: int = 256,
        val_batch_size: int | None = None,
        num_workers: int = 4,
        epoch_length: int | None = None,
        resample: bool = True,
        shuffle_buffer: int = 256,
        crop_size: int | None = 224,
        bands: list[str] | None = None,
        insert_b10: bool = True,
        flips: bool = True,
        blur: bool = True,
        jitter: float = 0.01,
        jitter_mode: str = "symmetric",
        keep_uint16: bool | None = None,
        index_csv: str | None = None,
        val_split_by_rank: bool = False,
        pin_memory: bool = True,
        seed: int = 0,
    ) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.augment = Augment(flips=flips, blur=blur, jitter=jitter, jitter_mode=jitter_mode)
        self._generator: torch.Generator | None = None

    def _ranks(self) -> tuple[int, int]:
        if self.trainer is not None:
            return self.trainer.global_rank, self.trainer.world_size
        return _rank_info()

    @property
    def keep_uint16(self) -> bool:
        """Whether batches leave the workers as uint16 (``keep_uint16``, or auto: on a GPU)."""
        if self.hparams.keep_uint16 is not None:
            return self.hparams.keep_uint16
        return self.trainer is not None and self.trainer.strategy.root_device.type == "cuda"

    def _loader(self, urls: str | list[str], train: bool) -> StreamLoader:
        hp = self.hparams
        rank, world_size = self._ranks()
        dataset = build_pipeline(
            urls,
            batch_size=hp.batch_size if train else hp.val_batch_size or hp.batch_size,
            train=train,
            resample=hp.resample,
            epoch_length=hp.epoch_length,
            shuffle_buffer=hp.shuffle_buffer,
            split_by_rank=train or hp.val_split_by_rank,
            crop_size=hp.crop_size,
            bands=hp.bands,
            insert_b10=hp.insert_b10,
            augment=self.augment,
            keep_uint16=self.keep_uint16,
            index_csv=hp.index_csv,
            seed=hp.seed,
            rank=rank,
            world_size=world_size,
        )
        return StreamLoader(dataset, hp.num_workers, pin_memory=hp.pin_memory and torch.cuda.is_available())

    def train_dataloader(self) -> StreamLoader:
        if not self.hparams.train_urls:
            raise ValueError("SatCLIPDataModule: train_urls is not set (a shard directory, pattern or list)")
        return self._loader(self.hparams.train_urls, train=True)

    def val_dataloader(self) -> StreamLoader | list:
        return self._loader(self.hparams.val_urls, train=False) if self.hparams.val_urls else []

    def on_after_batch_transfer(self, batch: dict, dataloader_idx: int) -> dict:
        """With ``keep_uint16``: uint16 -> float32 reflectance on the device, and augmentation when training."""
        if batch["image"].is_floating_point():
            return batch
        training = self.trainer is not None and self.trainer.training
        if not training:
            return finish_batch(batch)
        device = batch["image"].device
        if self._generator is None or self._generator.device != device:
            rank, _ = self._ranks()
            self._generator = torch.Generator(device=device).manual_seed(_seed_int(self.hparams.seed, rank, 1))
        return finish_batch(batch, self.augment, self._generator)


def skip_metrics(batch: dict, prefix: str = "data/skipped_") -> dict[str, float]:
    """``{"data/skipped_decode": 3.0, ...}`` from a batch's ``skipped`` counts, ready for ``self.log_dict``."""
    return {f"{prefix}{kind}": float(n) for kind, n in batch.get("skipped", {}).items()}


__all__ = [
    "EmptyStreamError",
    "SampleDecoder",
    "SatCLIPDataModule",
    "ShardError",
    "ShardStream",
    "StreamLoader",
    "build_pipeline",
    "check_lonlat",
    "expand_urls",
    "iter_shard",
    "iter_tar",
    "read_manifest",
    "skip_metrics",
]
