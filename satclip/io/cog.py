"""Cloud-Optimised GeoTIFF output of a grid: EPSG:4326, one band per dimension, internal tiles,
overviews, band descriptions, nodata, and for int8 a per-band scale and offset.

Written in two steps, both streaming: blocks go into a tiled staging GeoTIFF, overviews are built
on it, then GDAL's COG driver copies it into the COG layout (overviews and headers first) under a
temporary name, which is renamed into place. float16 is stored as IEEE half floats (``NBITS=16``
on a Float32 band: GDAL reads it back as float32).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .grid import Window
from .rasters import RasterSpec, move_into_place, partial_path, remove

COMPRESS = "deflate"


def overview_factors(height: int, width: int, tile: int) -> list[int]:
    """2, 4, 8, ... until the coarsest overview fits in one tile."""
    factors, f = [], 2
    while max(height, width) / (f // 2) > tile:
        factors.append(f)
        f *= 2
    return factors


class COGWriter:
    """Write (K, h, w) blocks of ``spec`` into a COG at ``path`` (``close()`` finishes and renames)."""

    def __init__(self, path: str | Path, spec: RasterSpec) -> None:
        import rasterio
        from rasterio.transform import Affine

        self.path, self.spec = Path(path), spec
        self.partial = partial_path(self.path)
        self.stage = self.path.with_name(self.path.name + ".partial.stage.tif")
        for stale in (self.partial, self.stage):
            remove(stale)
        grid = spec.grid
        self.creation = {"compress": COMPRESS, "bigtiff": "IF_SAFER", **({"nbits": 16} if spec.dtype == "float16" else {})}
        self.dataset = rasterio.open(
            self.stage, "w", driver="GTiff", width=grid.width, height=grid.height, count=spec.count,
            dtype="int8" if spec.dtype == "int8" else "float32", crs="EPSG:4326", transform=Affine(*grid.transform),
            nodata=spec.nodata, tiled=True, blockxsize=spec.tile, blockysize=spec.tile, interleave="pixel", **self.creation,
        )
        for i, name in enumerate(spec.band_names, start=1):
            self.dataset.set_band_description(i, name)
        if spec.quantiser is not None:
            self.dataset.scales = spec.quantiser.scale.tolist()
            self.dataset.offsets = spec.quantiser.offset.tolist()
        self.dataset.update_tags(**spec.attrs)

    def write(self, window: Window, block: np.ndarray) -> None:
        from rasterio.windows import Window as RioWindow

        data = block if block.dtype != np.float16 else block.astype(np.float32)
        self.dataset.write(data, window=RioWindow(window.col, window.row, window.width, window.height))

    def close(self) -> None:
        """Record the clip count, build overviews, copy into the COG layout and rename into place."""
        import rasterio.shutil
        from rasterio.enums import Resampling

        if self.spec.quantiser is not None:
            self.dataset.update_tags(satclip_int8_clipped=str(self.spec.quantiser.clipped))
        factors = overview_factors(self.spec.grid.height, self.spec.grid.width, self.spec.tile)
        if factors:
            self.dataset.build_overviews(factors, Resampling.average)
        self.dataset.close()
        rasterio.shutil.copy(self.stage, self.partial, driver="COG", blocksize=self.spec.tile,
                             overviews="FORCE_USE_EXISTING" if factors else "NONE", **self.creation)
        remove(self.stage)
        move_into_place(self.partial, self.path)

    def abort(self) -> None:
        if not self.dataset.closed:
            self.dataset.close()
        for stale in (self.partial, self.stage):
            remove(stale)


__all__ = ["COGWriter", "overview_factors"]
