"""Maps of embeddings: a global lon/lat grid, the principal components of embeddings over it and
their RGB colours. Numpy only, so ``satclip embed-grid --pca``, ``satclip plot-embeddings`` and the
training-time world map (:class:`satclip.train.geography.GeographyMetrics`) share one fit."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .outputs import written_whole


def lonlat_grid(resolution: float) -> tuple[np.ndarray, np.ndarray]:
    """Cell-centre longitudes (W,) and latitudes (H,), north first, of a global grid at ``resolution`` degrees."""
    if not 0 < resolution <= 30:
        raise ValueError(f"resolution must be in (0, 30] degrees, got {resolution}")
    lon = np.arange(-180 + resolution / 2, 180, resolution)
    lat = np.arange(90 - resolution / 2, -90, -resolution)
    return lon, lat


@dataclass
class PCAFit:
    """Principal components of a sample of embeddings: ``(emb - mean) @ components.T``."""

    mean: np.ndarray
    components: np.ndarray
    explained_variance_ratio: np.ndarray

    @classmethod
    def fit(cls, emb: np.ndarray, k: int) -> PCAFit:
        """The first ``k`` components of ``emb`` (n, D), signs fixed so each component's largest loading is positive."""
        if not 1 <= k <= min(emb.shape):
            raise ValueError(f"pca: K must be between 1 and {min(emb.shape)} (embedding size and sample), got {k}")
        mean = emb.mean(0)
        _, s, vt = np.linalg.svd(emb - mean, full_matrices=False)
        signs = np.sign(vt[np.arange(len(vt)), np.abs(vt).argmax(1)])
        var = s**2
        return cls(mean, (vt * signs[:, None])[:k], (var / var.sum())[:k] if var.sum() > 0 else np.zeros(k))

    def transform(self, emb: np.ndarray) -> np.ndarray:
        return (emb - self.mean) @ self.components.T

    def save(self, path: str | Path, **info: object) -> Path:
        """Write ``mean``, ``components``, ``explained_variance_ratio`` (and ``info`` as JSON) to an ``.npz``, atomically."""
        path = Path(path)
        with written_whole(path) as partial, partial.open("wb") as f:
            np.savez(
                f,
                mean=self.mean,
                components=self.components,
                explained_variance_ratio=self.explained_variance_ratio,
                info=np.array(json.dumps(info, default=str)),
            )
        return path

    @classmethod
    def load(cls, path: str | Path) -> PCAFit:
        with np.load(path) as data:
            return cls(data["mean"], data["components"], data["explained_variance_ratio"])


class PCAColours:
    """The first three principal components of reference embeddings (the fit of ``satclip
    embed-grid --pca 3``), mapped to [0, 1] RGB."""

    def __init__(self, emb: np.ndarray) -> None:
        self.fit = PCAFit.fit(emb, min(3, *emb.shape))
        pcs = self.fit.transform(emb)
        self.low, self.high = np.percentile(pcs, 1, axis=0), np.percentile(pcs, 99, axis=0)

    def __call__(self, emb: np.ndarray) -> np.ndarray:
        pcs = self.fit.transform(emb)
        span = np.where(self.high > self.low, self.high - self.low, 1.0)
        rgb = np.clip((pcs - self.low) / span, 0, 1)
        return np.pad(rgb, ((0, 0), (0, 3 - rgb.shape[1]))) if rgb.shape[1] < 3 else rgb


__all__ = ["PCAColours", "PCAFit", "lonlat_grid"]
