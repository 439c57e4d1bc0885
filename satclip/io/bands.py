"""From embeddings to stored bands: all or the first K dimensions, or K principal components;
and the int8 quantisation with a per-band scale and offset.

``BandMap`` turns (n, D) float64 embeddings into (n, K) float64 band values; ``Quantiser``
maps band values to int8 codes and back: ``value = code * scale + offset`` with codes in
[-127, 127] and -128 reserved for nodata (the layout of Google's Satellite Embedding COGs, with
a linear rather than their power-law scale). Scale and offset come from a sample of the output
(its range widened by ``margin`` on each side); values beyond it are clipped and counted.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from ..maps import PCAFit

INT8_NODATA = -128
INT8_MAX = 127


@dataclass
class BandMap:
    """Embeddings (n, D) -> band values (n, K): the first ``dims`` dimensions, or the components of ``pca``."""

    dim: int
    dims: int | None = None
    pca: PCAFit | None = None

    def __post_init__(self) -> None:
        if self.dims is not None and self.pca is not None:
            raise ValueError("--dims and --pca exclude each other")
        if self.dims is not None and not 1 <= self.dims <= self.dim:
            raise ValueError(f"--dims: expected 1..{self.dim} (the embedding size), got {self.dims}")

    @property
    def names(self) -> list[str]:
        if self.pca is not None:
            return [f"pc_{i + 1}" for i in range(len(self.pca.components))]
        return [f"emb_{i}" for i in range(self.dims or self.dim)]

    def __call__(self, emb: np.ndarray) -> np.ndarray:
        if self.pca is not None:
            return self.pca.transform(emb)
        return emb[:, : self.dims] if self.dims is not None else emb


@dataclass
class Quantiser:
    """int8 codes with a per-band ``scale`` and ``offset``: ``value = code * scale + offset``."""

    scale: np.ndarray
    offset: np.ndarray
    clipped: int = field(default=0)

    @classmethod
    def from_sample(cls, values: np.ndarray, margin: float = 0.05) -> Quantiser:
        """Scale and offset covering each band's sample range, widened by ``margin`` of it on both sides."""
        lo, hi = values.min(0), values.max(0)
        span = hi - lo
        lo, hi = lo - margin * span, hi + margin * span
        scale = np.where(hi > lo, (hi - lo) / (2 * INT8_MAX), 1.0)
        return cls(scale.astype(np.float64), ((hi + lo) / 2).astype(np.float64))

    def encode(self, values: np.ndarray) -> np.ndarray:
        """(n, K) values -> (n, K) int8 codes in [-127, 127]; counts clipped values in ``clipped``."""
        codes = np.rint((values - self.offset) / self.scale)
        outside = np.abs(codes) > INT8_MAX
        if outside.any():
            self.clipped += int(outside.sum())
            codes = np.clip(codes, -INT8_MAX, INT8_MAX)
        return codes.astype(np.int8)

    def decode(self, codes: np.ndarray, axis: int = -1) -> np.ndarray:
        """int8 codes -> float64 values (nodata -> NaN); ``axis`` is the band axis of ``codes``."""
        shape = [1] * codes.ndim
        shape[axis] = -1
        values = codes.astype(np.float64) * self.scale.reshape(shape) + self.offset.reshape(shape)
        return np.where(codes == INT8_NODATA, np.nan, values)


__all__ = ["INT8_NODATA", "BandMap", "PCAFit", "Quantiser"]
