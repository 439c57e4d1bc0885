"""Batches from decoded samples: shape checks, the output tensor (a shared-memory slot or a new
array), uint16 or augmented reflectance, and a keyed seed per batch so that a resumed worker continues exactly."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import torch

from .errors import SkipCounter
from .samples import Decoded
from .seeds import seed_int
from .sharedring import SharedBatchRing
from .transforms import ZERO_BANDS_KEY, Augment, flip_draws, flip_view, select_bands, to_reflectance


@dataclass
class Position:
    """How far one worker is in an epoch: raw samples taken from its (shuffled) stream, batches yielded."""

    raws: int = 0
    batches: int = 0


class Collator:
    """Collates one worker's samples into batches of ``batch_size`` (the last one may be short)."""

    def __init__(self, batch_size: int, augment: Augment | None, *, keep_uint16: bool, ring: SharedBatchRing | None) -> None:
        self.batch_size, self.augment, self.keep_uint16, self.ring = batch_size, augment, keep_uint16, ring

    def batches(self, samples: Iterator[Decoded], counter: SkipCounter, *, position: Position, seeds: tuple[int, ...]) -> Iterator[dict]:
        """Batches of ``samples``; batch ``b``'s augmentation draws from its own seed (``seeds`` + ``b``)."""
        pending: list[Decoded] = []
        shape: tuple[int, ...] = ()
        generator = torch.Generator()
        for sample in samples:
            size = (len(sample.bands),) + sample.image.shape[1:]
            shape = shape or size
            if size != shape:
                counter.record("shape", "(batch)", key=sample.key, cause=f"size {sample.image.shape} differs from {shape} (set crop_size)")
                continue
            pending.append(sample)
            if len(pending) == self.batch_size:
                yield self.assemble(pending, shape, generator=generator.manual_seed(seed_int(*seeds, position.batches)))
                pending = []
        if pending:
            yield self.assemble(pending, shape, generator=generator.manual_seed(seed_int(*seeds, position.batches)))

    def _output(self, shape: tuple[int, ...], dtype: type[np.number]) -> tuple[torch.Tensor, int | None]:
        """The tensor a batch is written into: a reused shared-memory slot in a worker of a
        :class:`StreamLoader` (no page faults), else a new numpy-allocated one (numpy asks for
        transparent huge pages for large arrays: far fewer page faults than torch.empty)."""
        worker = torch.utils.data.get_worker_info()
        if self.ring is not None and worker is not None:
            return self.ring.take(worker.id, shape, dtype=torch.from_numpy(np.empty(0, dtype=dtype)).dtype)
        return torch.from_numpy(np.empty(shape, dtype=dtype)), None

    def assemble(self, samples: list[Decoded], shape: tuple[int, ...], *, generator: torch.Generator) -> dict:
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
                    image = flip_view(image, horizontal=draws[i][0], vertical=draws[i][1])
                one = to_reflectance(torch.from_numpy(select_bands(image, sample.bands, out=scratch)), out=images[i])
                if self.augment is not None:
                    images[i] = self.augment.blurred(one[None], generator)[0]
            if self.augment is not None:
                lonlat = self.augment.coords(lonlat, generator)
        if slot is not None:
            extra["slot"] = slot
        time = torch.tensor([s.time for s in samples], dtype=torch.float64)
        return {"image": images, "lonlat": lonlat, "time": time, "key": [s.key for s in samples], **extra}


__all__ = ["Collator", "Position"]
