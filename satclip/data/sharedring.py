"""Reusable shared-memory batch buffers for DataLoader workers.

A tensor sent from a worker to the main process travels through shared memory. By default every
batch gets a freshly created segment, and the worker pays a page fault for each of its 4 KiB
pages as it fills it (``/dev/shm`` gets no huge pages): about 1 ms per 1.3 MB sample, three times
the cost of decoding an ``s2c`` payload. :class:`SharedBatchRing` gives each worker a few
segments that it fills again and again, so their pages are faulted in once per run.

Safety: a worker writes into a slot only while its flag (shared with the main process) says
free. The worker marks a slot busy when it takes it; only the main process frees it, and only
once nothing there can read the old contents: when the batch arrived already copied (pinned
memory), or when every tensor viewing its storage has been dropped (a weak reference to the
storage has expired), or, between epochs, for batches the DataLoader discarded unread. When no
slot is free the worker falls back to a new segment, so a consumer that keeps batches (e.g.
``list(loader)``) is correct, just not faster.
"""

from __future__ import annotations

import multiprocessing
from collections.abc import Sequence

import torch
from torch.multiprocessing.reductions import StorageWeakRef


def shared_storage(nbytes: int) -> torch.UntypedStorage:
    """A new shared-memory storage of ``nbytes`` (sent between processes without a copy), public API only."""
    return torch.UntypedStorage(nbytes).share_memory_()


def new_shared(shape: Sequence[int], dtype: torch.dtype) -> torch.Tensor:
    """A tensor in a new shared-memory segment (sent between processes without a copy)."""
    storage = shared_storage(torch.Size(shape).numel() * dtype.itemsize)
    return torch.empty(0, dtype=dtype).set_(storage, 0, tuple(shape))  # type: ignore[call-overload]  # stubs lack the storage form


class SharedBatchRing:
    """``slots`` shared-memory buffers per worker, reused once the main process is done with them.

    Worker side: :meth:`take`. Main side: :meth:`received` for each batch that arrives,
    :meth:`poll` before asking for the next one, :meth:`new_epoch` before each epoch."""

    def __init__(self, num_workers: int, slots: int) -> None:
        if num_workers < 1 or slots < 1:
            raise ValueError(f"a shared batch ring needs num_workers >= 1 and slots >= 1, got {num_workers}, {slots}")
        self.slots = slots
        self._busy = multiprocessing.RawArray("b", num_workers * slots)  # shared with the workers (fork or spawn)
        self._buffers: dict[int, torch.UntypedStorage] = {}  # worker side: slot -> storage
        self._held: dict[int, StorageWeakRef] = {}  # main side: slot -> the storage the consumer holds

    # -- worker side

    def take(self, worker: int, shape: Sequence[int], *, dtype: torch.dtype) -> tuple[torch.Tensor, int | None]:
        """(a shared-memory tensor to fill, its slot id); slot None: no free slot, a new segment."""
        nbytes = torch.Size(shape).numel() * dtype.itemsize
        for slot in range(worker * self.slots, (worker + 1) * self.slots):
            if self._busy[slot]:
                continue
            storage = self._buffers.get(slot)
            if storage is None or storage.nbytes() < nbytes:
                storage = self._buffers[slot] = shared_storage(nbytes)
            self._busy[slot] = 1
            return torch.empty(0, dtype=dtype).set_(storage, 0, tuple(shape)), slot  # type: ignore[call-overload]
        return new_shared(shape, dtype), None

    # -- main side

    def received(self, slot: int, image: torch.Tensor) -> None:
        """Track the batch tensor that arrived from ``slot``: free once copied (pinned) or dropped."""
        if image.is_pinned():
            self._busy[slot] = 0  # the pin-memory thread read it into a copy: nothing refers to it
        else:
            self._held[slot] = StorageWeakRef(image.untyped_storage())

    def poll(self) -> None:
        """Free the slots whose batches the consumer has dropped."""
        for slot in [s for s, ref in self._held.items() if ref.expired()]:
            del self._held[slot]
            self._busy[slot] = 0

    def new_epoch(self) -> None:
        """Before a new epoch's first request: every slot the consumer does not hold is free (any
        batch in flight from an interrupted epoch is discarded unread by the DataLoader)."""
        self.poll()
        for slot in range(len(self._busy)):
            if slot not in self._held:
                self._busy[slot] = 0


__all__ = ["SharedBatchRing", "new_shared", "shared_storage"]
