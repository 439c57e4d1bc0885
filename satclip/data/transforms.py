"""Image and coordinate transforms: band order, reflectance scaling, crops, flips, blur, jitter.

Two floors, one implementation:

- per sample, in the loader workers, on numpy: :func:`select_bands` (to a target band list,
  B10 synthesised as zeros) and :func:`crop` (random in training, centre at evaluation). Both
  shrink or keep the array, so they run before anything crosses a process boundary.
- per batch, on torch tensors of any device: :func:`to_reflectance`, :func:`random_flips`,
  :func:`gaussian_blur`, :func:`jitter_lonlat`, bundled by :class:`Augment`. The loader applies
  them in the workers, or, with ``keep_uint16``, leaves the batch uint16 (half the bytes of
  float32) and the DataModule applies the same :class:`Augment` on the GPU after transfer.

Matching the reference SatCLIP pretraining: reflectance = DN / 10000; an all-zero B10 at index 10
for the 13-band backbones; random crop 224; horizontal and vertical flips (p = 0.5 each);
Gaussian blur with kernel 3 and sigma ~ U(0.1, 2.0) (torchvision's ``GaussianBlur(3)``);
coordinate jitter. The reference jitters with a one-sided U(0, 0.01) degrees added to lon and lat
(every point moves north-east); ``mode="reference"`` reproduces that, the default
``"symmetric"`` adds U(-r, r).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from ..geo import wrap_longitude

S2_BANDS = ("B01", "B02", "B03", "B04", "B05", "B06", "B07", "B08", "B8A", "B09", "B11", "B12")
"""Band order of S2-100K patches (12 bands, no B10)."""
S2_BANDS_13 = S2_BANDS[:10] + ("B10",) + S2_BANDS[10:]
"""Band order of the 13-band Sentinel-2 backbones (B10 at index 10)."""
ZERO_BANDS = ("B10",)
"""Bands that may be synthesised as zeros when the source lacks them (B10, cirrus, is not in L2A)."""
REFLECTANCE_SCALE = 10000.0
JITTER_MODES = ("symmetric", "reference")


def target_bands(source: Sequence[str], bands: Sequence[str] | None = None, insert_b10: bool = False) -> tuple[str, ...]:
    """The band list the model sees: ``bands`` (default: the source order), with an all-zero B10
    inserted at index 10 when ``insert_b10`` and it is not already there."""
    target = list(bands if bands is not None else source)
    if insert_b10 and "B10" not in target:
        if len(target) < 10:
            raise ValueError(f"insert_b10 puts B10 at index 10, but the band list has only {len(target)} bands: {target}")
        target.insert(10, "B10")
    return tuple(target)


def band_indices(source: Sequence[str], target: Sequence[str]) -> np.ndarray:
    """Index into ``source`` for each target band; -1 marks a band filled with zeros (B10 only)."""
    index = {name: i for i, name in enumerate(source)}
    missing = [b for b in target if b not in index and b not in ZERO_BANDS]
    if missing:
        raise ValueError(f"bands {missing} are not in the source bands {list(source)} (only {ZERO_BANDS} can be zero-filled)")
    return np.array([index.get(b, -1) for b in target], dtype=np.int64)


def select_bands(image: np.ndarray, indices: np.ndarray) -> np.ndarray:
    """Reorder the bands (axis -3) of a (..., C, H, W) array; index -1 gives an all-zero band."""
    if (indices >= 0).all():
        return image[..., indices, :, :]
    out = np.zeros(image.shape[:-3] + (len(indices),) + image.shape[-2:], dtype=image.dtype)
    keep = np.flatnonzero(indices >= 0)
    out[..., keep, :, :] = image[..., indices[keep], :, :]
    return out


def crop_offsets(height: int, width: int, size: int, rng: np.random.Generator | None = None) -> tuple[int, int]:
    """(top, left) of a ``size`` crop: uniform random with ``rng``, else the centre (as
    torchvision's ``CenterCrop``: ``round((H - size) / 2)``)."""
    if height < size or width < size:
        raise ValueError(f"image {height}x{width} is smaller than the crop size {size}")
    if rng is None:
        return int(round((height - size) / 2)), int(round((width - size) / 2))
    return int(rng.integers(0, height - size + 1)), int(rng.integers(0, width - size + 1))


def crop(image: np.ndarray, size: int, top: int, left: int) -> np.ndarray:
    """The ``size`` x ``size`` window at (top, left) of a (..., H, W) array."""
    return image[..., top : top + size, left : left + size]


def to_reflectance(images: torch.Tensor) -> torch.Tensor:
    """Sentinel-2 digital numbers (any integer dtype, uint16 included) -> float32 reflectance / 10000.
    Float input is taken to be scaled already and is only cast to float32."""
    if images.is_floating_point():
        return images.float()
    return images.to(torch.float32) / REFLECTANCE_SCALE


def random_flips(images: torch.Tensor, generator: torch.Generator | None = None, p: float = 0.5) -> torch.Tensor:
    """Flip each image of a (B, C, H, W) batch horizontally and, independently, vertically, each with probability p."""
    b = images.shape[0]
    draws = torch.rand(2, b, generator=generator, device=images.device) < p
    images = torch.where(draws[0].view(b, 1, 1, 1), images.flip(-1), images)
    return torch.where(draws[1].view(b, 1, 1, 1), images.flip(-2), images)


def gaussian_blur(images: torch.Tensor, sigma: torch.Tensor, kernel_size: int = 3) -> torch.Tensor:
    """Blur each image of a float (B, C, H, W) batch with its own sigma (shape (B,)); separable
    kernel, reflect padding (as torchvision's ``gaussian_blur``)."""
    if kernel_size % 2 != 1:
        raise ValueError(f"kernel_size must be odd, got {kernel_size}")
    b, c, h, w = images.shape
    x = torch.arange(kernel_size, device=images.device, dtype=images.dtype) - kernel_size // 2
    kernel = torch.exp(-0.5 * (x / sigma.to(images).view(b, 1)) ** 2)
    kernel = (kernel / kernel.sum(dim=1, keepdim=True)).repeat_interleave(c, dim=0)  # (B*C, k)
    pad = kernel_size // 2
    out = F.pad(images.reshape(1, b * c, h, w), (pad, pad, pad, pad), mode="reflect")
    out = F.conv2d(out, kernel.view(b * c, 1, 1, kernel_size), groups=b * c)
    out = F.conv2d(out, kernel.view(b * c, 1, kernel_size, 1), groups=b * c)
    return out.view(b, c, h, w)


def jitter_lonlat(
    lonlat: torch.Tensor, radius: float, mode: str = "symmetric", generator: torch.Generator | None = None
) -> torch.Tensor:
    """Add a random offset (degrees) to each [lon, lat] row of a (B, 2) tensor.

    ``symmetric``: U(-radius, radius) on lon and on lat. ``reference``: U(0, radius), as the
    reference SatCLIP does. Latitudes are clamped to [-90, 90] and longitudes wrapped, so the
    result is always a valid coordinate.
    """
    if mode not in JITTER_MODES:
        raise ValueError(f"jitter mode {mode!r} is not one of {JITTER_MODES}")
    if radius == 0:
        return lonlat
    u = torch.rand(lonlat.shape, generator=generator, device=lonlat.device, dtype=torch.float64).to(lonlat.dtype)
    offset = radius * (2 * u - 1 if mode == "symmetric" else u)
    moved = lonlat + offset
    return torch.stack([wrap_longitude(moved[:, 0]), moved[:, 1].clamp(-90.0, 90.0)], dim=1)


@dataclass
class Augment:
    """Training augmentation of a batch dict (``image`` (B, C, H, W), ``lonlat`` (B, 2)), on any device."""

    flips: bool = True
    blur: bool = True
    blur_kernel: int = 3
    blur_sigma: tuple[float, float] = (0.1, 2.0)
    jitter: float = 0.01
    jitter_mode: str = "symmetric"

    def __post_init__(self) -> None:
        if self.jitter_mode not in JITTER_MODES:
            raise ValueError(f"jitter_mode {self.jitter_mode!r} is not one of {JITTER_MODES}")
        if self.jitter < 0:
            raise ValueError(f"jitter radius must be >= 0 degrees, got {self.jitter}")

    def __call__(self, images: torch.Tensor, lonlat: torch.Tensor, generator: torch.Generator | None = None):
        """Augment float images and float64 lonlat; returns (images, lonlat)."""
        if self.flips:
            images = random_flips(images, generator)
        if self.blur:
            lo, hi = self.blur_sigma
            sigma = lo + (hi - lo) * torch.rand(images.shape[0], generator=generator, device=images.device)
            images = gaussian_blur(images, sigma, self.blur_kernel)
        if self.jitter:
            lonlat = jitter_lonlat(lonlat, self.jitter, self.jitter_mode, generator)
        return images, lonlat


def finish_batch(batch: dict, augment: Augment | None = None, generator: torch.Generator | None = None) -> dict:
    """Turn a batch of digital numbers into model input: reflectance float32, then ``augment``
    (training; None at evaluation). Used in the workers and, with ``keep_uint16``, on the device."""
    images = to_reflectance(batch["image"])
    lonlat = batch["lonlat"]
    if augment is not None:
        images, lonlat = augment(images, lonlat, generator)
    return {**batch, "image": images, "lonlat": lonlat}


__all__ = [
    "JITTER_MODES",
    "REFLECTANCE_SCALE",
    "S2_BANDS",
    "S2_BANDS_13",
    "ZERO_BANDS",
    "Augment",
    "band_indices",
    "crop",
    "crop_offsets",
    "finish_batch",
    "gaussian_blur",
    "jitter_lonlat",
    "random_flips",
    "select_bands",
    "target_bands",
    "to_reflectance",
]
