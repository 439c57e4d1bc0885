"""What every grid writer is given: the grid, the band names, the storage type and the metadata.

The writers (:mod:`.cog` for GeoTIFF, :mod:`.zarr_grid` for Zarr) take a :class:`RasterSpec`,
accept (K, h, w) blocks with ``write(window, block)``, write under a temporary name, and move the
result into place in ``close()``; ``abort()`` removes the temporary output.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from .bands import INT8_NODATA, Quantiser
from .grid import Grid

STORAGE_DTYPES = ("float32", "float16", "int8")
EPSG_4326_WKT = (
    'GEOGCS["WGS 84",DATUM["WGS_1984",SPHEROID["WGS 84",6378137,298.257223563]],PRIMEM["Greenwich",0],'
    'UNIT["degree",0.0174532925199433],AXIS["Latitude",NORTH],AXIS["Longitude",EAST],AUTHORITY["EPSG","4326"]]'
)


@dataclass
class RasterSpec:
    """A grid of ``len(band_names)`` bands stored as ``dtype``; ``quantiser`` is set for int8."""

    grid: Grid
    band_names: list[str]
    dtype: str = "float32"
    tile: int = 256
    quantiser: Quantiser | None = None
    attrs: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.dtype not in STORAGE_DTYPES:
            raise ValueError(f"--dtype: expected one of {', '.join(STORAGE_DTYPES)}, got {self.dtype!r}")
        if (self.dtype == "int8") != (self.quantiser is not None):
            raise ValueError("int8 storage needs a quantiser (scale and offset per band), and only int8 takes one")
        if self.tile < 128 or self.tile % 16:
            raise ValueError(f"--tile: expected a multiple of 16 pixels, at least 128 (GDAL's smallest COG tile), got {self.tile}")

    @property
    def count(self) -> int:
        return len(self.band_names)

    @property
    def nodata(self) -> float:
        return float(INT8_NODATA) if self.dtype == "int8" else float("nan")

    def encode(self, values: np.ndarray) -> np.ndarray:
        """(n, K) float64 band values -> (n, K) in the storage type."""
        if self.quantiser is not None:
            return self.quantiser.encode(values)
        return values.astype(self.dtype)


__all__ = ["EPSG_4326_WKT", "STORAGE_DTYPES", "RasterSpec"]
