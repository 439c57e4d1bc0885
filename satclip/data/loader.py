"""The DataLoader wrapper the training loop trusts: skip counts summed over workers into every
batch, Lightning's ``set_epoch`` forwarded to the workers, an empty epoch reported with its cause."""

from __future__ import annotations

from collections.abc import Callable, Iterator

from torch.utils.data import DataLoader

from .errors import SKIP_KINDS, EmptyStreamError, add_counts
from .pipeline import ShardStream
from .sharedring import SharedBatchRing


class StreamLoader:
    """A DataLoader over a :class:`ShardStream` that the training loop can trust.

    - every batch's ``skipped`` is the total {kind: count} over all workers since this loader was
      created (also :attr:`skipped`), including skips after a worker's last batch;
    - ``len()`` is the number of batches per epoch when known (always with an epoch length);
    - Lightning calls ``loader.sampler.set_epoch(epoch)`` at each epoch start: it reseeds the
      workers (persistent ones too);
    - an epoch with no batch at all raises :class:`EmptyStreamError` saying why;
    - with workers, each worker writes its batches into a few reused shared-memory buffers
      (:class:`SharedBatchRing`: no page faults for fresh segments), each reused only once the
      consumer has dropped (or pinned a copy of) the batch it held; ``reuse_shared_memory=False``
      gives every batch a new segment (PyTorch's default behaviour);
    - ``worker_init_fn`` is the DataLoader's.
    """

    def __init__(
        self,
        dataset: ShardStream,
        num_workers: int = 0,
        pin_memory: bool = False,
        persistent_workers: bool = True,
        prefetch_factor: int | None = None,
        reuse_shared_memory: bool = True,
        worker_init_fn: Callable[[int], None] | None = None,
    ) -> None:
        dataset.check_workers(num_workers)
        dataset.trailer = True
        # Enough slots per worker for its prefetched batches, the one being built and the two
        # the consumer may hold (the loop variable still holds the last batch during next()).
        slots = (prefetch_factor or 2) + 2
        self.ring = SharedBatchRing(num_workers, slots) if num_workers > 0 and reuse_shared_memory else None
        dataset.ring = self.ring
        self.stream = dataset  # not named `dataset`: Lightning would take us for a DataLoader over an IterableDataset
        self.num_workers = num_workers
        self.loader = DataLoader(
            dataset,
            batch_size=None,
            num_workers=num_workers,
            pin_memory=pin_memory,
            persistent_workers=persistent_workers and num_workers > 0,
            prefetch_factor=prefetch_factor if num_workers > 0 else None,
            worker_init_fn=worker_init_fn,
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
        if self.ring is not None:
            self.ring.new_epoch()
        produced = 0
        for item in self.loader:
            self._latest[item.pop("worker")] = item.pop("skipped")
            if item.pop("trailer", False):
                continue
            if "slot" in item and self.ring is not None:
                self.ring.received(item.pop("slot"), item["image"])
            item["skipped"] = self.skipped
            produced += 1
            yield item
            if self.ring is not None:
                self.ring.poll()
        if produced == 0:
            raise EmptyStreamError(self.stream.empty_message(self.skipped))


__all__ = ["StreamLoader"]
