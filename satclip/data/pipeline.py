"""The pipeline inside each DataLoader worker: shard selection, sample checking, shuffle buffer,
batching and (unless ``keep_uint16``) augmentation. :func:`build_pipeline` is the plain builder.

Keeping ranks in step (DDP hangs when one rank runs more steps than another): training draws
shards with replacement (``resample=True``), or cycles each worker's share (``resample=False``),
and every worker stops after the same number of batches, ``ceil(epoch_length / (batch_size *
num_workers))``, so every rank runs exactly that many times ``num_workers`` steps whatever its
shards hold. Seeds come from (seed, global rank, worker id, epoch). Evaluation makes one pass
without augmentation; by default every rank reads the whole validation set (identical step
counts, exact metrics on every rank).
"""

from __future__ import annotations

import itertools
import math
import multiprocessing
import os
import random
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch.utils.data import IterableDataset

from .errors import EmptyStreamError, SkipCounter, format_counts
from .s2index import read_index
from .samples import Decoded, SampleDecoder, Skip
from .shardlist import expand_urls, read_manifest
from .sharedring import SharedBatchRing
from .tarstream import iter_shard
from .transforms import S2_BANDS, ZERO_BANDS_KEY, Augment, flip_draws, flip_view, select_bands, to_reflectance


def rank_info() -> tuple[int, int]:
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


class _ShardWatch:
    """Stops a worker that cycles or resamples shards none of which holds a valid sample (it would
    read forever). A shard is dead once every sample of one read of it failed (or the read had
    none); all candidates dead before any valid sample is an :class:`EmptyStreamError`. Reads are
    numbered because the shuffle buffer decodes their samples out of order."""

    def __init__(self, candidates: set[str], cycling: bool, rank: int, counter: SkipCounter) -> None:
        self.candidates, self.cycling, self.rank, self.counter = candidates, cycling, rank, counter
        self.seen_valid = False
        self.sizes: dict[int, tuple[str, int]] = {}
        self.failures: dict[int, int] = {}
        self.dead: set[str] = set()

    def read_done(self, read: int, url: str, size: int) -> None:
        if self.cycling and not self.seen_valid:
            self.sizes[read] = (url, size)
            self._check(read)

    def failed(self, read: int) -> None:
        if self.cycling and not self.seen_valid:
            self.failures[read] = self.failures.get(read, 0) + 1
            self._check(read)

    def valid(self) -> None:
        if not self.seen_valid:
            self.seen_valid = True
            self.sizes.clear()
            self.failures.clear()

    def _check(self, read: int) -> None:
        if read not in self.sizes or self.failures.get(read, 0) < self.sizes[read][1]:
            return
        self.dead.add(self.sizes[read][0])
        if self.dead >= self.candidates:
            raise EmptyStreamError(
                f"rank {self.rank}: none of the {len(self.dead)} shards this worker reads yields a valid sample "
                f"(skipped: {format_counts(self.counter.counts)}); first: {sorted(self.dead)[0]}. "
                "The 'satclip.data' warnings above give each cause."
            )


@dataclass
class Position:
    """How far one worker is in an epoch: raw samples taken from its (shuffled) stream, batches yielded."""

    raws: int = 0
    batches: int = 0


class ShardStream(IterableDataset):
    """Batches from WebDataset shards, for one rank; each DataLoader worker reads its own part.

    Modes (see the module docstring): ``resample=True`` (training, infinite shard draws with
    replacement, ``epoch_length`` required); ``resample=False`` with ``epoch_length`` (shards split
    by rank and worker, each worker cycles its share); ``epoch_length=None`` (one pass, shards
    split by worker and, with ``split_by_rank``, by rank). With an epoch length every worker
    yields exactly :meth:`batches_per_worker` full batches.

    Batches are dicts: ``image`` (B, C, H, W) float32 reflectance (with ``keep_uint16``: uint16
    digital numbers without the all-zero bands, whose output indices are under ``zero_bands``;
    :func:`finish_batch` inserts them on the device), ``lonlat`` (B, 2) float64 [lon, lat]
    degrees, ``time`` (B,) float64 acquisition time (Unix seconds UTC, NaN unknown; see
    :mod:`satclip.acqtime`), ``key`` list of str, ``skipped`` {kind: count} of this worker in this epoch,
    ``worker`` its id, ``position`` (raw samples taken, batches yielded) of that worker after this
    batch, ``slot`` its shared-memory slot when :attr:`ring` is set.

    Randomness is keyed, not sequential where it can be: sample ``i``'s crop and batch ``b``'s
    augmentation have their own seeds (seed, rank, worker, epoch, i or b), so a worker resumed at a
    ``position`` skips what came before without decoding it and continues exactly.
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
        self.ring: SharedBatchRing | None = None  # StreamLoader sets this: reused shared-memory batches
        self.resume_at: Any = None  # StreamLoader sets this: shared [epoch, raws_0, batches_0, raws_1, ...] to resume from

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
        random.Random(seed_int(self.seed, self.epoch)).shuffle(urls)
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

    def _raw_samples(self, shards: Iterator[str], watch: _ShardWatch, counter: SkipCounter) -> Iterator[tuple[dict, int]]:
        """(raw sample, read number) of each shard read in turn; tells ``watch`` each read's size."""
        for read, url in enumerate(shards):
            size = 0
            for raw in iter_shard(url, counter):
                size += 1
                yield raw, read
            watch.read_done(read, url, size)

    def _decoded(
        self, raws: Iterator[tuple[dict, int]], watch: _ShardWatch, counter: SkipCounter, position: Position, seeds: tuple[int, ...]
    ) -> Iterator[Decoded]:
        """Decoded, checked samples; bad ones counted; ``position.raws`` counts the raw samples taken.
        Runs after the shuffle buffer, so samples still waiting in it when the epoch ends are never
        decoded. Sample ``i``'s random crop comes from its own seed (``seeds`` + ``i``)."""
        for raw, read in raws:
            index, position.raws = position.raws, position.raws + 1
            rng = np.random.default_rng([*seeds, index]) if self.augment is not None else None
            try:
                sample = self.decoder(raw, rng)
            except Skip as skip:
                counter.record(skip.kind, raw["__url__"], raw["__key__"], skip)
                watch.failed(read)
                continue
            watch.valid()
            yield sample

    def _batches(self, samples: Iterator[Decoded], counter: SkipCounter, position: Position, seeds: tuple[int, ...]) -> Iterator[dict]:
        """Batches of ``samples``; batch ``b``'s augmentation draws from its own seed (``seeds`` + ``b``)."""
        pending: list[Decoded] = []
        shape: tuple[int, ...] = ()
        generator = torch.Generator()
        for sample in samples:
            size = (len(sample.bands),) + sample.image.shape[1:]
            shape = shape or size
            if size != shape:
                counter.record("shape", "(batch)", sample.key, f"size {sample.image.shape} differs from {shape} (set crop_size)")
                continue
            pending.append(sample)
            if len(pending) == self.batch_size:
                yield self._assemble(pending, shape, generator.manual_seed(seed_int(*seeds, position.batches)))
                pending = []
        if pending:
            yield self._assemble(pending, shape, generator.manual_seed(seed_int(*seeds, position.batches)))

    def _output(self, shape: tuple[int, ...], dtype: type[np.number]) -> tuple[torch.Tensor, int | None]:
        """The tensor a batch is written into: a reused shared-memory slot in a worker of a
        :class:`StreamLoader` (no page faults), else a new numpy-allocated one (numpy asks for
        transparent huge pages for large arrays: far fewer page faults than torch.empty)."""
        worker = torch.utils.data.get_worker_info()
        if self.ring is not None and worker is not None:
            return self.ring.take(worker.id, shape, torch.from_numpy(np.empty(0, dtype=dtype)).dtype)
        return torch.from_numpy(np.empty(shape, dtype=dtype)), None

    def _assemble(self, samples: list[Decoded], shape: tuple[int, ...], generator: torch.Generator) -> dict:
        """Collate samples: uint16 without the all-zero bands (``keep_uint16``; they are inserted
        on the device by :func:`finish_batch`), or reflectance augmented sample by sample."""
        lonlat = torch.from_numpy(np.stack([s.lonlat for s in samples]))
        indices = samples[0].bands
        extra: dict = {}
        if self.keep_uint16:
            kept = indices[indices >= 0]
            images, slot = self._output((len(samples), len(kept), *shape[1:]), np.uint16)
            out = images.numpy()
            for i, sample in enumerate(samples):
                select_bands(sample.image, sample.bands[sample.bands >= 0], out=out[i])
            if len(kept) < len(indices):
                extra[ZERO_BANDS_KEY] = np.flatnonzero(indices < 0).tolist()
        else:
            images, slot = self._output((len(samples), *shape), np.float32)
            scratch = np.empty(shape, dtype=np.uint16)
            flips = self.augment is not None and self.augment.flips
            draws = flip_draws(len(samples), generator).T.tolist() if flips else None
            for i, sample in enumerate(samples):
                image = sample.image
                if draws is not None:  # flipping the uint16 view is free; select_bands makes the one copy
                    image = flip_view(image, *draws[i])
                one = to_reflectance(torch.from_numpy(select_bands(image, sample.bands, out=scratch)), out=images[i])
                if self.augment is not None:
                    images[i] = self.augment.blurred(one[None], generator)[0]
            if self.augment is not None:
                lonlat = self.augment.coords(lonlat, generator)
        if slot is not None:
            extra["slot"] = slot
        time = torch.tensor([s.time for s in samples], dtype=torch.float64)
        return {"image": images, "lonlat": lonlat, "time": time, "key": [s.key for s in samples], **extra}

    def _resume_point(self, worker: int, epoch: int) -> Position:
        """Where this worker starts in ``epoch``: after the raw samples and batches a checkpoint
        recorded as consumed (:attr:`resume_at`, set by :class:`StreamLoader`), else at the start."""
        at = self.resume_at
        if at is None or at[0] != epoch or 2 + 2 * worker >= len(at):
            return Position()
        return Position(raws=int(at[1 + 2 * worker]), batches=int(at[2 + 2 * worker]))

    def __iter__(self) -> Iterator[dict]:
        worker, num_workers = _worker_info()
        epoch = self.epoch
        seeds = (self.seed, self.rank, worker, epoch)
        py_rng = random.Random(seed_int(*seeds))
        counter = SkipCounter(where=f"[rank {self.rank} worker {worker}] ")
        shards, candidates = self._shard_plan(worker, num_workers, py_rng)
        watch = _ShardWatch(candidates, self.epoch_length is not None, self.rank, counter)
        raws = self._raw_samples(shards, watch, counter)
        if self.shuffle_buffer > 1:
            raws = _shuffled(raws, self.shuffle_buffer, py_rng)
        position = self._resume_point(worker, epoch)
        if position.raws:  # consumed before the checkpoint: read past them (the shuffle buffer too), not decoded
            for _ in itertools.islice(raws, position.raws):
                pass
            counter.counts = dict.fromkeys(counter.counts, 0)  # the loader restored the totals up to here
            watch.valid()
        limit = self.batches_per_worker(num_workers)
        batches = self._batches(self._decoded(raws, watch, counter, position, seeds), counter, position, seeds)
        while position.batches != limit and (batch := next(batches, None)) is not None:
            position.batches += 1
            batch["skipped"] = counter.snapshot()
            batch["worker"] = worker
            batch["position"] = (position.raws, position.batches)
            yield batch
        if self.trailer:
            yield {"skipped": counter.snapshot(), "worker": worker, "trailer": True}
        elif position.batches == 0 and num_workers == 1 and (self.world_size == 1 or not self.split_by_rank):
            raise EmptyStreamError(self.empty_message(counter.counts))

    def empty_message(self, counts: dict[str, int]) -> str:
        """Why a pass gave no batch: shard count, first shard, skip counts by kind."""
        where = f"rank {self.rank} of {self.world_size}: " if self.world_size > 1 else ""
        return (
            f"{where}no sample from {len(self.urls)} shards (first: {self.urls[0]}); "
            f"skipped: {format_counts(counts)}. The 'satclip.data' warnings give each cause"
            + (" (more ranks than shards?)" if self.split_by_rank and self.world_size > len(self.urls) else "")
        )


def seed_int(*parts: int) -> int:
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
    detected_rank, detected_world = rank_info()
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
        index=read_index(os.fspath(index_csv)) if index_csv else None,
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


__all__ = ["ShardStream", "build_pipeline", "rank_info", "seed_int"]
