"""The front door: a model and the preprocessing its image tower expects, in one call.

``model, preprocess = satclip.create_model_and_transforms("satclip-resnet18-l10")`` (a released name,
a checkpoint path, an ``hf-hub:`` id or an https URL, as ``satclip.load`` takes) gives the ``SatCLIP``
model in eval mode and a ``Preprocess``: uint16 Sentinel-2 digital numbers in a given band order (S2-100K's
12 bands by default) -> the tower's input, i.e. its band list with an all-zero B10 where it takes 13
bands, reflectance = DN / 10000 and a centre crop (the checkpoint's training crop when it records one,
else 224 px). ``satclip embed-images``, ``satclip locate`` and the benchmarks go through it, and the
evaluation stream of shards or GeoTIFF folders is built from the same ``ImageInputs``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch

from .checkpoints import load, read_checkpoint, resolve_source

if TYPE_CHECKING:
    from ..model import SatCLIP

DEFAULT_CROP = 224


@dataclass(frozen=True)
class ImageInputs:
    """What the image tower expects: band list (None: the source order), B10 inserted, crop size."""

    bands: tuple[str, ...] | None
    insert_b10: bool
    crop_size: int


def image_inputs(source: str | Path, in_chans: int, *, crop_size: int | None = None) -> ImageInputs:
    """Bands and crop of a checkpoint's image tower: its recorded data settings when present, else
    S2-100K's 12 bands (plus a zero B10 when the tower takes 13) and a 224 px crop."""
    from ..data.transforms import S2_BANDS, target_bands

    path = resolve_source(source)
    data = read_checkpoint(path).get("datamodule_hyper_parameters") if path.is_file() else None
    data = data if isinstance(data, dict) else {}
    bands = tuple(data["bands"]) if data.get("bands") else None
    insert_b10 = bool(data.get("insert_b10", in_chans == len(S2_BANDS) + 1))
    crop = int(crop_size or data.get("crop_size") or DEFAULT_CROP)
    n = len(target_bands(bands or S2_BANDS, None, insert_b10=insert_b10))
    if n != in_chans:
        raise ValueError(f"checkpoint {str(source)!r}: its image tower takes {in_chans} bands, but the inputs give {n}")
    return ImageInputs(bands, insert_b10, crop)


@dataclass(frozen=True)
class Preprocess:
    """Sentinel-2 digital numbers -> the image tower's input (see the module docstring)."""

    inputs: ImageInputs

    def __call__(self, images: np.ndarray | torch.Tensor, source_bands: Sequence[str] | None = None) -> torch.Tensor:
        """``images``: (C, H, W) or (N, C, H, W) uint16 DN (float: reflectance already) with bands in
        ``source_bands`` order (default S2-100K's 12); returns a float32 (N, C', crop, crop) tensor."""
        from ..data.transforms import S2_BANDS, band_indices, crop, crop_offsets, select_bands, target_bands, to_reflectance

        array = images.numpy() if isinstance(images, torch.Tensor) else np.asarray(images)
        if array.ndim not in (3, 4):
            raise ValueError(f"images: expected (C, H, W) or (N, C, H, W), got shape {array.shape}")
        array = array[None] if array.ndim == 3 else array
        source = tuple(source_bands or S2_BANDS)
        if array.shape[1] != len(source):
            raise ValueError(f"images: {array.shape[1]} bands, but the band order names {len(source)}: {source}")
        size = self.inputs.crop_size
        top, left = crop_offsets(array.shape[2], array.shape[3], size=size)
        window = crop(array, size, top=top, left=left)
        picked = select_bands(window, band_indices(source, target_bands(self.inputs.bands or source, None, insert_b10=self.inputs.insert_b10)))
        return to_reflectance(torch.from_numpy(np.ascontiguousarray(picked)))


def create_model_and_transforms(source: str | Path, device: str | torch.device = "cpu", *, crop_size: int | None = None) -> tuple[SatCLIP, Preprocess]:
    """The full model of ``source`` (eval mode, on ``device``) and the preprocessing of its image tower."""
    model = load(source, device=device).eval()
    first_conv = next(p for p in model.visual.parameters() if p.ndim == 4)
    return model, Preprocess(image_inputs(source, int(first_conv.shape[1]), crop_size=crop_size))


__all__ = ["DEFAULT_CROP", "ImageInputs", "Preprocess", "create_model_and_transforms", "image_inputs"]
