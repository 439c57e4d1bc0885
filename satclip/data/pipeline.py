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
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np
import torch
from torch.utils.data import IterableDataset

from .collate import Collator, Position
from .errors import EmptyStreamError, SkipCounter, format_counts
from .s2index import read_index
from .samples import Decoded, SampleDecoder, Skip
from .seeds import seed_int
from .shardlist import expand_urls, read_manifest
from .shardplan import ShardPlan, ShardWatch, shuffled
from .sharedring import SharedBatchRing
from .tarstream import iter_shard
from .transforms import S2_BANDS, Augment


def rank_info() -> tuple[int, int]:
    """(global rank, world size) from torch.distributed, else the RANK / WORLD_SIZE variables."""
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_rank(), torch.distributed.get_world_size()
    return int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1))


def _worker_info() -> tuple[int, int]:
    info = torch.utils.data.get_worker_info()
    return (info.id, info.num_workers) if info is not None else (0, 1)


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
        *,
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
        total, plan = 0, self.plan()
        for worker in range(max(1, num_workers)):
            samples = sum(self.counts[u] for u in plan.share(plan.ordered(self.epoch), worker, num_workers=max(1, num_workers)))
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

    def plan(self) -> ShardPlan:
        """Which shards each worker reads (the settings of this stream)."""
        return ShardPlan(
            tuple(self.urls), self.resample, self.epoch_length is not None, self.augment is not None, self.split_by_rank, self.rank, self.world_size, self.seed
        )

    def _raw_samples(self, shards: Iterator[str], watch: ShardWatch, *, counter: SkipCounter) -> Iterator[tuple[dict, int]]:
        """(raw sample, read number) of each shard read in turn; tells ``watch`` each read's size."""
        for read, url in enumerate(shards):
            size = 0
            for raw in iter_shard(url, counter):
                size += 1
                yield raw, read
            watch.read_done(read, url, size=size)

    def _decoded(
        self, raws: Iterator[tuple[dict, int]], watch: ShardWatch, *, counter: SkipCounter, position: Position, seeds: tuple[int, ...]
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
                counter.record(skip.kind, raw["__url__"], key=raw["__key__"], cause=skip)
                watch.failed(read)
                continue
            watch.valid()
            yield sample

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
        shards, candidates = self.plan().worker_shards(epoch, worker, num_workers=num_workers, rng=py_rng)
        watch = ShardWatch(candidates, self.epoch_length is not None, rank=self.rank, counter=counter)
        raws = self._raw_samples(shards, watch, counter=counter)
        if self.shuffle_buffer > 1:
            raws = shuffled(raws, self.shuffle_buffer, rng=py_rng)
        position = self._resume_point(worker, epoch)
        if position.raws:  # consumed before the checkpoint: read past them (the shuffle buffer too), not decoded
            for _ in itertools.islice(raws, position.raws):
                pass
            counter.counts = dict.fromkeys(counter.counts, 0)  # the loader restored the totals up to here
            watch.valid()
        limit = self.batches_per_worker(num_workers)
        collator = Collator(self.batch_size, self.augment, keep_uint16=self.keep_uint16, ring=self.ring)
        batches = collator.batches(self._decoded(raws, watch, counter=counter, position=position, seeds=seeds), counter, position=position, seeds=seeds)
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
        batch_size=batch_size,
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


__all__ = ["ShardStream", "build_pipeline", "rank_info"]
