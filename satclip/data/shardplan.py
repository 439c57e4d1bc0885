"""Shard selection for one worker of one rank: the shard order of an epoch, each worker's share,
the shuffle buffer, and the watch that stops a worker whose shards hold no valid sample."""

from __future__ import annotations

import itertools
import random
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass

from .errors import EmptyStreamError, SkipCounter, format_counts
from .seeds import seed_int


def shuffled(items: Iterable, size: int, *, rng: random.Random) -> Iterator:
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


class ShardWatch:
    """Stops a worker that cycles or resamples shards none of which holds a valid sample (it would
    read forever). A shard is dead once every sample of one read of it failed (or the read had
    none); all candidates dead before any valid sample is an :class:`EmptyStreamError`. Reads are
    numbered because the shuffle buffer decodes their samples out of order."""

    def __init__(self, candidates: set[str], cycling: bool, *, rank: int, counter: SkipCounter) -> None:
        self.candidates, self.cycling, self.rank, self.counter = candidates, cycling, rank, counter
        self.seen_valid = False
        self.sizes: dict[int, tuple[str, int]] = {}
        self.failures: dict[int, int] = {}
        self.dead: set[str] = set()

    def read_done(self, read: int, url: str, *, size: int) -> None:
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


@dataclass(frozen=True)
class ShardPlan:
    """Which shards a DataLoader worker of a rank reads, in which order (see :class:`ShardStream`'s modes)."""

    urls: tuple[str, ...]
    resample: bool
    cycling: bool
    shuffle_order: bool
    split_by_rank: bool
    rank: int
    world_size: int
    seed: int

    def share(self, urls: Sequence[str], worker: int, *, num_workers: int) -> list[str]:
        """This worker's part of ``urls``: every ``world_size``-th from the rank (if split by rank), then every ``num_workers``-th."""
        if self.split_by_rank:
            urls = urls[self.rank :: self.world_size]
        return list(urls[worker::num_workers])

    def ordered(self, epoch: int) -> list[str]:
        """This epoch's shard order: as given, or, for training without resampling, one shuffled
        order common to all ranks (so their shares stay disjoint)."""
        urls = list(self.urls)
        if self.shuffle_order and not self.resample:
            random.Random(seed_int(self.seed, epoch)).shuffle(urls)
        return urls

    def worker_shards(self, epoch: int, worker: int, *, num_workers: int, rng: random.Random) -> tuple[Iterator[str], set[str]]:
        """(the shards this worker reads, in order; the distinct shards it can ever read)."""
        if self.resample:
            return (rng.choice(self.urls) for _ in itertools.count()), set(self.urls)
        share = self.share(self.ordered(epoch), worker, num_workers=num_workers)
        if not self.cycling:
            return iter(share), set(share)
        if not share:
            raise ValueError(f"rank {self.rank} worker {worker} has no shard to cycle ({len(self.urls)} shards)")
        return itertools.chain.from_iterable(itertools.repeat(share)), set(share)


__all__ = ["ShardPlan", "ShardWatch", "shuffled"]
