"""Synthetic batches for smoke runs, tests and benchmarks (no shards needed).

Locations are uniform on the sphere; each image is a constant pattern of its location (sines and
cosines of lon/lat spread over the bands) plus noise, so a model can learn the pairing and the
contrastive loss falls.
"""

from __future__ import annotations

import math
from collections.abc import Iterator

import lightning.pytorch as L
import torch
from torch.utils.data import DataLoader, IterableDataset


def synthetic_batch(batch_size: int, image_size: int = 32, *, in_chans: int = 13, generator: torch.Generator | None = None, noise: float = 0.5) -> dict:
    """One ``{"image": (B, C, H, W) float32, "lonlat": (B, 2) float64, "key": [...]}`` batch."""
    g = generator or torch.Generator().manual_seed(0)
    lon = torch.rand(batch_size, generator=g, dtype=torch.float64) * 360 - 180
    lat = torch.rad2deg(torch.asin(torch.rand(batch_size, generator=g, dtype=torch.float64) * 2 - 1))
    lonlat = torch.stack([lon, lat], dim=1)
    rad = torch.deg2rad(lonlat).float()
    freqs = torch.arange(1, in_chans + 1, dtype=torch.float32)[None, :]
    signal = torch.sin(freqs * rad[:, :1]) + torch.cos(freqs * rad[:, 1:]) * math.sqrt(0.5)
    image = signal[:, :, None, None] + noise * torch.randn(batch_size, in_chans, image_size, image_size, generator=g)
    return {"image": image, "lonlat": lonlat, "key": [f"synthetic-{i}" for i in range(batch_size)]}


class _Batches(IterableDataset):
    def __init__(self, num_batches: int, seed: int, **kwargs) -> None:
        self.num_batches, self.seed, self.kwargs = num_batches, seed, kwargs

    def __len__(self) -> int:
        return self.num_batches

    def __iter__(self) -> Iterator[dict]:
        g = torch.Generator().manual_seed(self.seed)
        for _ in range(self.num_batches):
            yield synthetic_batch(generator=g, **self.kwargs)


class SyntheticDataModule(L.LightningDataModule):
    """``num_batches`` training batches per epoch and ``val_batches`` fixed validation batches of
    ``batch_size`` synthetic (image, lonlat) pairs: ``--data satclip.train.synthetic.SyntheticDataModule``."""

    def __init__(self, batch_size: int = 8, num_batches: int = 10, *, val_batches: int = 2, image_size: int = 32, in_chans: int = 13, seed: int = 0) -> None:
        super().__init__()
        self.save_hyperparameters()

    def _loader(self, num_batches: int, seed: int) -> DataLoader:
        hp = self.hparams
        data = _Batches(num_batches, seed, batch_size=hp.batch_size, image_size=hp.image_size, in_chans=hp.in_chans)
        return DataLoader(data, batch_size=None, num_workers=0)

    def train_dataloader(self) -> DataLoader:
        epoch = self.trainer.current_epoch if self.trainer is not None else 0
        return self._loader(self.hparams.num_batches, self.hparams.seed + 1000 * (epoch + 1))

    def val_dataloader(self) -> DataLoader | list:
        return self._loader(self.hparams.val_batches, self.hparams.seed) if self.hparams.val_batches else []


__all__ = ["SyntheticDataModule", "synthetic_batch"]
