"""Cloud-Optimised GeoTIFF output of a grid: EPSG:4326, one band per dimension, internal tiles,
overviews, band descriptions, nodata, and for int8 a per-band scale and offset.

Written in steps, each streaming with memory bounded by a few tiles: blocks go into a tiled
staging GeoTIFF; each overview level (2x, 4x, ... until one tile holds it) is the 2 x 2 average of
the level below, computed here tile by tile into its own staging file (GDAL's own overview builder
re-reads a many-band pixel-interleaved file many times over); a VRT names those files as the
overviews, and GDAL's COG driver copies it into the COG layout (overviews and headers first)
under a temporary name, which is renamed into place. float16 is stored as IEEE half floats
(``NBITS=16`` on a Float32 band: GDAL reads it back as float32). int8 overviews average the codes
(one scale and offset per band at every level), leaving out nodata.
"""

from __future__ import annotations

import warnings
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np

from ..outputs import move_into_place, partial_path, remove
from .grid import Window
from .rasters import RasterSpec

COMPRESS = "deflate"  # the COG: every GeoTIFF reader has it
STAGE_COMPRESS = "zstd"  # staging files, read once: fast at level 1
GDAL_CACHE_MB = 256  # GDAL's block cache while writing (its default is 5% of RAM); a 256-band float32 tile is 64 MB


def overview_factors(height: int, width: int, *, tile: int) -> list[int]:
    """2, 4, 8, ... until the coarsest overview fits in one tile."""
    factors, f = [], 2
    while max(height, width) / (f // 2) > tile:
        factors.append(f)
        f *= 2
    return factors


def average_2x2(block: np.ndarray, nodata: float) -> np.ndarray:
    """(K, 2h, 2w) -> (K, h, w) mean of each 2 x 2 cell, leaving out nodata and the pixels beyond an odd edge."""
    k, h, w = block.shape
    is_int = block.dtype.kind == "i"
    if h % 2 or w % 2:  # an odd edge: repeat its last row / column (the same mean as leaving the missing pixels out)
        block = np.pad(block, ((0, 0), (0, h % 2), (0, w % 2)), mode="edge")
        k, h, w = block.shape
    missing = (block == nodata) if is_int else np.isnan(block)
    if not missing.any():  # the common case: no nodata
        wide = np.int16 if is_int else np.float64
        total = block[:, 0::2, 0::2].astype(wide) + block[:, 1::2, 0::2] + block[:, 0::2, 1::2] + block[:, 1::2, 1::2]
        if is_int:
            return ((2 * total + 4) // 8).astype(block.dtype)  # total / 4, rounded half up
        return (total / 4).astype(block.dtype)
    values = block.astype(np.float32)
    values[missing] = np.nan
    cells = values.reshape(k, values.shape[1] // 2, 2, values.shape[2] // 2, 2)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-nodata cells: NaN
        mean = np.nanmean(cells, axis=(2, 4))
    if is_int:
        return np.where(np.isnan(mean), nodata, np.floor(mean + 0.5)).astype(block.dtype)  # round half up, as above
    return mean.astype(block.dtype)


class COGWriter:
    """Write (K, h, w) blocks of ``spec`` into a COG at ``path`` (``close()`` finishes and renames)."""

    def __init__(self, path: str | Path, spec: RasterSpec) -> None:
        import rasterio

        self.path, self.spec = Path(path), spec
        self.partial = partial_path(self.path)
        self.factors = overview_factors(spec.grid.height, spec.grid.width, tile=spec.tile)
        self.stages = [self.path.with_name(f"{self.path.name}.partial.stage{i}.tif") for i in range(len(self.factors) + 1)]
        self.vrt = self.path.with_name(self.path.name + ".partial.vrt")
        for stale in (self.partial, self.vrt, *self.stages):
            remove(stale)
        half = {"nbits": 16} if spec.dtype == "float16" else {}
        self.creation = {"compress": COMPRESS, "bigtiff": "IF_SAFER", **half}  # the COG
        self.staging = {"compress": STAGE_COMPRESS, "zstd_level": 1, "bigtiff": "IF_SAFER", **half}  # temporary files: fast
        self.env = rasterio.Env(GDAL_CACHEMAX=GDAL_CACHE_MB)  # entered until close() or abort()
        self.env.__enter__()
        try:
            self.dataset = self._create(self.stages[0], spec.grid.height, width=spec.grid.width, resolution=spec.grid.resolution)
        except BaseException:
            self.env.__exit__(None, None, None)
            raise
        for i, name in enumerate(spec.band_names, start=1):
            self.dataset.set_band_description(i, name)
        if spec.quantiser is not None:
            self.dataset.scales = spec.quantiser.scale.tolist()
            self.dataset.offsets = spec.quantiser.offset.tolist()
        self.dataset.update_tags(**spec.attrs)

    def _create(self, path: Path, height: int, *, width: int, resolution: float):
        import rasterio
        from rasterio.transform import Affine

        grid = self.spec.grid
        return rasterio.open(
            path,
            "w",
            driver="GTiff",
            width=width,
            height=height,
            count=self.spec.count,
            dtype="int8" if self.spec.dtype == "int8" else "float32",
            crs="EPSG:4326",
            transform=Affine(resolution, 0.0, grid.west, 0.0, -resolution, grid.north),
            nodata=self.spec.nodata,
            tiled=True,
            blockxsize=self.spec.tile,
            blockysize=self.spec.tile,
            interleave="pixel",
            **self.staging,
        )

    def write(self, window: Window, block: np.ndarray) -> None:
        from rasterio.windows import Window as RioWindow

        data = block if block.dtype != np.float16 else block.astype(np.float32)
        self.dataset.write(data, window=RioWindow(window.col, window.row, window.width, window.height))

    def _overview(self, level: int) -> None:
        """Stage file ``level`` from ``level - 1``: 2 x 2 averages, one output tile at a time."""
        import rasterio
        from rasterio.windows import Window as RioWindow

        tile, nodata = self.spec.tile, self.spec.nodata
        with rasterio.open(self.stages[level - 1]) as src:
            height, width = (src.height + 1) // 2, (src.width + 1) // 2
            with self._create(self.stages[level], height, width=width, resolution=self.spec.grid.resolution * 2**level) as dst:
                for row in range(0, height, tile):
                    for col in range(0, width, tile):
                        h, w = min(tile, height - row), min(tile, width - col)
                        window = RioWindow(2 * col, 2 * row, min(2 * w, src.width - 2 * col), min(2 * h, src.height - 2 * row))
                        reduced = average_2x2(src.read(window=window), nodata)
                        dst.write(reduced[:, :h, :w], window=RioWindow(col, row, w, h))

    def _write_vrt(self) -> None:
        """A VRT of the base stage file with the overview stage files as its overviews."""
        import rasterio.shutil

        rasterio.shutil.copy(self.stages[0], self.vrt, driver="VRT")
        tree = ET.parse(self.vrt)
        for band in tree.getroot().iter("VRTRasterBand"):
            for stage in self.stages[1:]:
                overview = ET.SubElement(band, "Overview")
                ET.SubElement(overview, "SourceFilename", relativeToVRT="0").text = str(stage.resolve())
                ET.SubElement(overview, "SourceBand").text = band.get("band")
        tree.write(self.vrt)

    def close(self) -> None:
        """Record the clip count, build the overviews, copy into the COG layout and rename into place."""
        import rasterio.shutil

        if self.spec.quantiser is not None:
            self.dataset.update_tags(satclip_int8_clipped=str(self.spec.quantiser.clipped))
        self.dataset.close()
        for level in range(1, len(self.stages)):
            self._overview(level)
        self._write_vrt()
        rasterio.shutil.copy(
            self.vrt, self.partial, driver="COG", blocksize=self.spec.tile, overviews="FORCE_USE_EXISTING" if self.factors else "NONE", **self.creation
        )
        for stage in (self.vrt, *self.stages):
            remove(stage)
        move_into_place(self.partial, self.path)
        self.env.__exit__(None, None, None)

    def abort(self) -> None:
        if not self.dataset.closed:
            self.dataset.close()
        for stale in (self.partial, self.vrt, *self.stages):
            remove(stale)
        self.env.__exit__(None, None, None)


__all__ = ["COGWriter", "average_2x2", "overview_factors"]
