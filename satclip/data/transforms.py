"""Image and coordinate transforms: band order, reflectance scaling, crops, flips, blur, jitter.

Two floors, one implementation:

- per sample, in the loader workers, on numpy: :func:`crop` (random in training, centre at
  evaluation, a view) and :func:`select_bands` (to a target band list, B10 synthesised as zeros;
  the one copy, straight into the batch). Nothing bigger than the crop crosses a process boundary.
- on torch tensors of any device, (B, C, H, W): :func:`to_reflectance`, :func:`random_flips`,
  :func:`gaussian_blur`, :func:`jitter_lonlat`, bundled by :class:`Augment` and
  :func:`finish_batch`. The workers apply them one sample at a time (the data stays in cache:
  several times faster than whole-batch passes on CPU); with ``keep_uint16`` the batch stays uint16
  (half the bytes of float32) without its all-zero bands (B10) and the DataModule applies
  :func:`finish_batch` on the GPU, which inserts them (:func:`insert_zero_bands`).

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

from ..geo import wrap_longitude
from .bands import S2_BANDS, S2_BANDS_13, ZERO_BANDS

REFLECTANCE_SCALE = 10000.0
ZERO_BANDS_KEY = "zero_bands"
"""Batch key of ``keep_uint16`` batches: output indices of the all-zero bands left out of ``image``."""
JITTER_MODES = ("symmetric", "reference")


def target_bands(source: Sequence[str], bands: Sequence[str] | None = None, *, insert_b10: bool = False) -> tuple[str, ...]:
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


def select_bands(image: np.ndarray, indices: np.ndarray, *, out: np.ndarray | None = None) -> np.ndarray:
    """Reorder the bands (axis -3) of a (..., C, H, W) array into a new array (or ``out``);
    index -1 gives an all-zero band. Works on strided views (crops) without an extra copy."""
    if out is None:
        out = np.empty(image.shape[:-3] + (len(indices),) + image.shape[-2:], dtype=image.dtype)
    for j, i in enumerate(indices.tolist()):  # band by band: twice as fast as np.take on a crop view
        if i < 0:
            out[..., j, :, :] = 0
        else:
            out[..., j, :, :] = image[..., i, :, :]
    return out


def crop_offsets(height: int, width: int, *, size: int, rng: np.random.Generator | None = None) -> tuple[int, int]:
    """(top, left) of a ``size`` crop: uniform random with ``rng``, else the centre (as
    torchvision's ``CenterCrop``: ``round((H - size) / 2)``)."""
    if height < size or width < size:
        raise ValueError(f"image {height}x{width} is smaller than the crop size {size}")
    if rng is None:
        return int(round((height - size) / 2)), int(round((width - size) / 2))
    return int(rng.integers(0, height - size + 1)), int(rng.integers(0, width - size + 1))


def crop(image: np.ndarray, size: int, *, top: int, left: int) -> np.ndarray:
    """The ``size`` x ``size`` window at (top, left) of a (..., H, W) array."""
    return image[..., top : top + size, left : left + size]


def to_reflectance(images: torch.Tensor, out: torch.Tensor | None = None) -> torch.Tensor:
    """Sentinel-2 digital numbers (any integer dtype, uint16 included) -> a new float32 tensor (or
    ``out``) of reflectance = DN / 10000. Float input is taken to be scaled already and is only copied."""
    if out is not None:
        return out.copy_(images) if images.is_floating_point() else out.copy_(images).div_(REFLECTANCE_SCALE)
    if images.is_floating_point():
        return images.to(torch.float32, copy=True)
    if images.dtype == torch.uint16 and images.device.type != "cpu":
        # uint16 has only "limited support" off the CPU: reinterpret the bits as int16 and undo
        # the sign in int32, which every backend supports.
        images = images.view(torch.int16).to(torch.int32).bitwise_and_(0xFFFF)
    return images.to(torch.float32).div_(REFLECTANCE_SCALE)


def flip_draws(n: int, generator: torch.Generator | None = None, *, p: float = 0.5, device=None) -> torch.Tensor:
    """(2, n) booleans: flip image i horizontally (row 0) and, independently, vertically (row 1),
    each with probability p."""
    return torch.rand(2, n, generator=generator, device=device) < p


def flip_view(image: np.ndarray, *, horizontal: bool, vertical: bool) -> np.ndarray:
    """A flipped view (no copy) of a (..., H, W) array: the loader workers flip the uint16 crop
    for free, before the one copy into the batch."""
    return image[..., :: -1 if vertical else 1, :: -1 if horizontal else 1]


def random_flips(images: torch.Tensor, generator: torch.Generator | None = None, *, p: float = 0.5) -> torch.Tensor:
    """Flip each image of a (B, C, H, W) batch horizontally and, independently, vertically, each
    with probability p. In place; returns ``images``."""
    draws = flip_draws(images.shape[0], generator, p=p, device=images.device)
    for dim, flip in zip((-1, -2), draws):
        index = flip.nonzero().flatten()
        if index.numel():
            images[index] = images[index].flip(dim)
    return images


def gaussian_blur(images: torch.Tensor, sigma: torch.Tensor, *, kernel_size: int = 3) -> torch.Tensor:
    """Blur each image of a float (B, C, H, W) batch with its own sigma (shape (B,)): separable
    kernel, reflect padding, as torchvision's ``gaussian_blur``. Shifted multiply-adds rather than
    a grouped convolution: several times faster on CPU, and as fast on GPU."""
    if kernel_size % 2 != 1:
        raise ValueError(f"kernel_size must be odd, got {kernel_size}")
    x = torch.arange(kernel_size, device=images.device, dtype=images.dtype) - kernel_size // 2
    kernel = torch.exp(-0.5 * (x / sigma.to(images).view(-1, 1)) ** 2)
    kernel = kernel / kernel.sum(dim=1, keepdim=True)  # (B, k)
    return _convolve_axis(_convolve_axis(images, kernel, dim=-1), kernel, dim=-2)


def _convolve_axis(images: torch.Tensor, kernel: torch.Tensor, *, dim: int) -> torch.Tensor:
    """Convolve along ``dim`` with reflect padding, without materialising the padded copy: each tap
    adds a shifted slice, and the few mirrored edge rows/columns are added separately."""
    b, k = kernel.shape
    pad, n = k // 2, images.shape[dim]
    if n <= pad:
        raise ValueError(f"reflect padding of {pad} needs more than {pad} pixels along dim {dim}, got {n}")
    weight = [kernel[:, j].view(b, 1, 1, 1) for j in range(k)]
    out = images * weight[pad]
    for d in range(1, pad + 1):
        # x[i - d] (left tap) and x[i + d] (right tap); past an edge, the mirror: x[-j] = x[j], x[n-1+j] = x[n-1-j]
        out.narrow(dim, d, n - d).addcmul_(images.narrow(dim, 0, n - d), weight[pad - d])
        out.narrow(dim, 0, d).addcmul_(images.narrow(dim, 1, d).flip(dim), weight[pad - d])
        out.narrow(dim, 0, n - d).addcmul_(images.narrow(dim, d, n - d), weight[pad + d])
        out.narrow(dim, n - d, d).addcmul_(images.narrow(dim, n - 1 - d, d).flip(dim), weight[pad + d])
    return out


def jitter_lonlat(lonlat: torch.Tensor, radius: float, *, mode: str = "symmetric", generator: torch.Generator | None = None) -> torch.Tensor:
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
    """Training augmentation of float (B, C, H, W) images and (B, 2) [lon, lat], on any device."""

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

    def images(self, images: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """Flips and blur of float images (may work in place; use the returned tensor)."""
        if self.flips:
            images = random_flips(images, generator)
        return self.blurred(images, generator)

    def blurred(self, images: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """The blur alone (the loader workers flip the uint16 crops themselves, see :func:`flip_view`)."""
        if not self.blur:
            return images
        lo, hi = self.blur_sigma
        sigma = lo + (hi - lo) * torch.rand(images.shape[0], generator=generator, device=images.device)
        return gaussian_blur(images, sigma, kernel_size=self.blur_kernel)

    def coords(self, lonlat: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """Coordinate jitter of ``self.jitter`` degrees (see :func:`jitter_lonlat`)."""
        return jitter_lonlat(lonlat, self.jitter, mode=self.jitter_mode, generator=generator)


def insert_zero_bands(images: torch.Tensor, positions: Sequence[int]) -> torch.Tensor:
    """A new (B, C + len(positions), H, W) tensor: ``images`` with all-zero bands at ``positions``
    (indices into the output, e.g. [10] for B10 of the 13-band backbones)."""
    total = images.shape[1] + len(positions)
    if sorted(set(positions)) != sorted(positions) or not all(0 <= p < total for p in positions):
        raise ValueError(f"zero band positions {list(positions)} must be distinct indices in [0, {total})")
    out = images.new_zeros((images.shape[0], total, *images.shape[2:]))
    kept = [j for j in range(total) if j not in positions]
    start = 0
    while start < len(kept):  # copy runs of consecutive kept bands as slices
        end = start + 1
        while end < len(kept) and kept[end] == kept[end - 1] + 1:
            end += 1
        out[:, kept[start] : kept[end - 1] + 1] = images[:, start:end]
        start = end
    return out


def finish_batch(batch: dict, augment: Augment | None = None, *, generator: torch.Generator | None = None) -> dict:
    """Turn a batch of digital numbers into model input: reflectance float32 with the all-zero
    bands listed under ``zero_bands`` inserted (``keep_uint16`` batches leave them out: fewer bytes
    between processes), then ``augment`` (training; None at evaluation). The device path of
    ``keep_uint16``; the loader workers apply the same functions one sample at a time."""
    batch = dict(batch)
    images = to_reflectance(batch["image"])
    zero_bands = batch.pop(ZERO_BANDS_KEY, None)
    if zero_bands:
        images = insert_zero_bands(images, zero_bands)
    lonlat = batch["lonlat"]
    if augment is not None:
        images, lonlat = augment.images(images, generator), augment.coords(lonlat, generator)
    return {**batch, "image": images, "lonlat": lonlat}


__all__ = [
    "JITTER_MODES",
    "REFLECTANCE_SCALE",
    "S2_BANDS",
    "S2_BANDS_13",
    "ZERO_BANDS",
    "ZERO_BANDS_KEY",
    "Augment",
    "band_indices",
    "crop",
    "crop_offsets",
    "finish_batch",
    "flip_draws",
    "flip_view",
    "gaussian_blur",
    "insert_zero_bands",
    "jitter_lonlat",
    "random_flips",
    "select_bands",
    "target_bands",
    "to_reflectance",
]
