"""A regular lon/lat grid (EPSG:4326): pixel centres, tiles and samples of a bounding box.

Pixel (row, col) covers [west + col*res, west + (col+1)*res] x [north - (row+1)*res, north - row*res];
its embedded coordinate is its centre. Rows run north to south, as in a GeoTIFF. A box that
crosses the antimeridian is rejected (:func:`satclip.geo.validate_bbox`).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np

from ..geo import validate_bbox

WHOLE_PIXEL_TOLERANCE = 1e-6  # in pixels: a box must span a whole number of pixels to this precision
POINTS_PER_SECOND = 24_000
"""The rate that refusals of too large grids quote: one CPU thread of the released L = 10 float64
tower (docs/speed.md); a GPU is tens of times faster."""


def time_estimate(points: float) -> str:
    """``about 31.2 days at 24,000 points/s, one CPU thread`` for ``points`` embeddings (:data:`POINTS_PER_SECOND`)."""
    seconds = points / POINTS_PER_SECOND
    size, unit = next(((s, u) for u, s in (("years", 365.25 * 86400), ("days", 86400), ("hours", 3600), ("minutes", 60)) if seconds >= s), (1, "seconds"))
    return f"about {seconds / size:,.3g} {unit} at {POINTS_PER_SECOND:,} points/s, one CPU thread"


@dataclass(frozen=True)
class Window:
    """A block of pixels: rows ``row .. row + height``, columns ``col .. col + width``."""

    row: int
    col: int
    height: int
    width: int

    @property
    def size(self) -> int:
        return self.height * self.width


@dataclass(frozen=True)
class Grid:
    """``height`` x ``width`` pixels of ``resolution`` degrees whose north-west corner is (west, north)."""

    west: float
    north: float
    resolution: float
    width: int
    height: int

    @classmethod
    def from_bbox(cls, bbox: tuple[float, float, float, float] | list[float], resolution: float) -> Grid:
        """The grid covering ``bbox`` (west, south, east, north); its sides must be whole numbers of pixels."""
        west, south, east, north = validate_bbox(bbox)
        if not (np.isfinite(resolution) and resolution > 0):
            raise ValueError(f"resolution: expected a positive number of degrees, got {resolution!r}")
        sizes = []
        for what, span in (("width", east - west), ("height", north - south)):
            pixels = span / resolution
            if abs(pixels - round(pixels)) > WHOLE_PIXEL_TOLERANCE or round(pixels) < 1:
                raise ValueError(f"bbox {what} {span:g} degrees is not a whole number of {resolution:g}-degree pixels ({pixels:.6g})")
            sizes.append(int(round(pixels)))
        return cls(west, north, float(resolution), sizes[0], sizes[1])

    @property
    def shape(self) -> tuple[int, int]:
        return self.height, self.width

    @property
    def transform(self) -> tuple[float, float, float, float, float, float]:
        """GDAL-order affine (a, b, c, d, e, f): x = a*col + b*row + c, y = d*col + e*row + f."""
        return (self.resolution, 0.0, self.west, 0.0, -self.resolution, self.north)

    @property
    def bounds(self) -> tuple[float, float, float, float]:
        """(west, south, east, north) of the pixel edges."""
        return (self.west, self.north - self.height * self.resolution, self.west + self.width * self.resolution, self.north)

    def lon(self, cols: np.ndarray | None = None) -> np.ndarray:
        """Centre longitudes of ``cols`` (default all columns)."""
        cols = np.arange(self.width) if cols is None else np.asarray(cols)
        return self.west + (cols + 0.5) * self.resolution

    def lat(self, rows: np.ndarray | None = None) -> np.ndarray:
        """Centre latitudes of ``rows`` (default all rows), north first."""
        rows = np.arange(self.height) if rows is None else np.asarray(rows)
        return self.north - (rows + 0.5) * self.resolution

    def centres(self, window: Window) -> np.ndarray:
        """(height * width, 2) [lon, lat] pixel centres of ``window``, row-major."""
        lon = self.lon(np.arange(window.col, window.col + window.width))
        lat = self.lat(np.arange(window.row, window.row + window.height))
        return np.stack([np.tile(lon, window.height), np.repeat(lat, window.width)], axis=1)

    def tiles(self, size: int) -> Iterator[Window]:
        """``size`` x ``size`` windows (smaller at the east and south edges), row by row."""
        for row in range(0, self.height, size):
            for col in range(0, self.width, size):
                yield Window(row, col, min(size, self.height - row), min(size, self.width - col))

    def sample(self, n: int) -> np.ndarray:
        """About ``n`` pixel centres on a regular sub-grid spread over the whole box (every pixel when it has at most ``n``)."""
        step = max(1.0, float(np.sqrt(self.width * self.height / max(1, n))))
        rows = np.unique(np.floor(np.arange(0, self.height, step)).astype(np.int64) + int(step // 2)).clip(0, self.height - 1)
        cols = np.unique(np.floor(np.arange(0, self.width, step)).astype(np.int64) + int(step // 2)).clip(0, self.width - 1)
        lon, lat = np.meshgrid(self.lon(cols), self.lat(rows))
        return np.stack([lon.ravel(), lat.ravel()], axis=1)


__all__ = ["Grid", "Window"]
