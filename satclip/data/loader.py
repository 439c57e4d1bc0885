"""The DataLoader wrapper the training loop trusts: skip counts summed over workers into every
batch, Lightning's ``set_epoch`` forwarded to the workers, an empty epoch reported with its cause,
and the stream position saved in and restored from checkpoints (``state_dict``)."""

from __future__ import annotations

import multiprocessing
from collections.abc import Callable, Iterator
from typing import Any

from torch.utils.data import DataLoader

from .errors import SKIP_KINDS, EmptyStreamError, ResumeError, add_counts
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
    - ``worker_init_fn`` is the DataLoader's;
    - ``state_dict()`` / ``load_state_dict()`` (Lightning calls them for checkpoints): the epoch,
      each worker's position in it and the skip totals. A restored loader continues after the last
      batch it had yielded, skipping the consumed samples without decoding them, with the same
      number of workers, in the data epoch it was in, whatever epoch Lightning resumes in (it counts
      a ``max_steps`` stop as an epoch's end; that Lightning epoch then ends early), so the stream
      of batches is the uninterrupted run's.
    """

    def __init__(
        self,
        dataset: ShardStream,
        num_workers: int = 0,
        *,
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
        # data epoch = Lightning's + offset; positions[worker] = (raws, batches) consumed in it
        self._epoch_offset, self._lightning_epoch = 0, 0
        self._positions: dict[int, tuple[int, int]] = {}
        self._complete = False
        self._restored: dict[str, Any] | None = None
        dataset.resume_at = self._resume_at = multiprocessing.RawArray("q", 1 + 2 * max(1, num_workers))
        self._resume_at[0] = -1

    batch_sampler = None  # Lightning's shuffle check reads it (no batch sampler: batches come whole)

    @property
    def sampler(self) -> StreamLoader:
        """Lightning looks for ``set_epoch`` on ``dataloader.sampler``; it is ours."""
        return self

    def set_epoch(self, epoch: int) -> None:
        """Lightning's epoch ``epoch`` starts: the data epoch is ``epoch`` plus the offset a restore set."""
        self._lightning_epoch = epoch
        self.stream.set_epoch(epoch + self._epoch_offset)

    def _start_epoch(self) -> bool:
        """Before an epoch's first batch: after a restore, continue the saved data epoch at its
        positions (or start the next one if it was complete), whatever epoch Lightning counts
        (an epoch it ends without a batch does not use up a data epoch). Whether it resumed."""
        restored, self._restored = self._restored, None
        self._resume_at[:] = [-1] + [0] * (len(self._resume_at) - 1)
        if restored is None:
            return False
        data_epoch = restored["epoch"] + (1 if restored["complete"] else 0)
        self._epoch_offset = data_epoch - self._lightning_epoch
        self.stream.set_epoch(data_epoch)
        if restored["complete"]:
            return False
        for worker, (raws, batches) in restored["positions"].items():
            self._resume_at[1 + 2 * worker], self._resume_at[2 + 2 * worker] = raws, batches
        self._resume_at[0] = data_epoch
        return True

    def state_dict(self) -> dict[str, Any]:
        """The stream position (plain types: checkpoints stay weights_only-loadable)."""
        limit = self.stream.batches_per_worker(self.num_workers)
        ended = len(self._positions) == max(1, self.num_workers) and all(b == limit for _, b in self._positions.values())
        return {
            "format": 1, "epoch": self.stream.epoch, "lightning_epoch": self._lightning_epoch, "num_workers": self.num_workers,
            "positions": {w: list(p) for w, p in self._positions.items()}, "complete": self._complete or ended, "skipped": self.skipped,
        }  # fmt: skip

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Continue from ``state`` (see the class docstring); a different number of workers is refused."""
        if state.get("format") != 1:
            raise ValueError(f"unknown StreamLoader state format {state.get('format')!r}")
        if state["num_workers"] != self.num_workers:
            raise ResumeError(
                f"the checkpoint's data position is for data.num_workers={state['num_workers']} (each worker has its own "
                f"stream); resume with that many workers, not {self.num_workers}"
            )
        self._restored = {**state, "positions": {int(w): tuple(p) for w, p in state["positions"].items()}}
        self._base, self._latest = dict(state["skipped"]), {}

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
        resumed = self._start_epoch()
        at = self._resume_at
        self._positions = {w: (int(at[1 + 2 * w]), int(at[2 + 2 * w])) for w in range(max(1, self.num_workers))} if resumed else {}
        self._complete = False
        produced = 0
        for item in self.loader:
            worker = item.pop("worker")
            self._latest[worker] = item.pop("skipped")
            if item.pop("trailer", False):
                continue
            self._positions[worker] = item.pop("position")
            if "slot" in item and self.ring is not None:
                self.ring.received(item.pop("slot"), item["image"])
            item["skipped"] = self.skipped
            produced += 1
            yield item
            if self.ring is not None:
                self.ring.poll()
        self._complete = True
        if produced == 0 and not resumed:
            raise EmptyStreamError(self.stream.empty_message(self.skipped))


__all__ = ["StreamLoader"]
