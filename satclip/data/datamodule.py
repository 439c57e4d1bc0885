"""The LightningDataModule (``data:`` section of a LightningCLI config) and the skip metrics."""

from __future__ import annotations

import lightning.pytorch as L
import torch

from .loader import StreamLoader
from .pipeline import build_pipeline, rank_info
from .seeds import seed_int
from .transforms import Augment, finish_batch


class SatCLIPDataModule(L.LightningDataModule):
    """Training and validation shards for LightningCLI (``data:`` section of a config).

    Training: random crop, flips, blur, coordinate jitter, shuffle buffer; ``resample=True`` draws
    shards with replacement and every rank runs ``ceil(epoch_length / (batch_size * max(1,
    num_workers))) * max(1, num_workers)`` steps per epoch (``epoch_length``: samples per epoch per
    rank; default the manifest's total / world size). Validation: one pass, centre crop, no
    augmentation; every rank reads the whole set unless ``val_split_by_rank``. ``keep_uint16``
    sends uint16 batches without the all-zero B10 through the workers and pinned memory (under
    half the bytes of float32) and inserts B10, scales and augments them on the device in
    :meth:`on_after_batch_transfer`; None (default):
    on when the trainer runs on a GPU.
    """

    def __init__(
        self,
        train_urls: str | list[str] | None = None,
        val_urls: str | list[str] | None = None,
        *,
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
        return rank_info()

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
            self._generator = torch.Generator(device=device).manual_seed(seed_int(self.hparams.seed, rank, 1))
        return finish_batch(batch, self.augment, generator=self._generator)


def skip_metrics(batch: dict, prefix: str = "data/skipped_") -> dict[str, float]:
    """``{"data/skipped_decode": 3.0, ...}`` from a batch's ``skipped`` counts, ready for ``self.log_dict``."""
    return {f"{prefix}{kind}": float(n) for kind, n in batch.get("skipped", {}).items()}


__all__ = ["SatCLIPDataModule", "skip_metrics"]
