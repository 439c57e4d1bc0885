"""Zarr output of a grid, readable by ``xarray.open_zarr``: ``embedding`` (band, lat, lon) with
1-D ``lat`` / ``lon`` pixel-centre coordinates, a ``band`` coordinate of names and a CF
``crs`` grid mapping (WGS 84), Zarr format 2 with consolidated metadata.

Chunks are (all bands, tile, tile): one chunk per written block. int8 stores codes with
fill value -128 (xarray masks it) and 1-D ``scale`` / ``offset`` variables along ``band``:
``value = embedding * scale + offset``. The store is written under a temporary name and renamed
into place when complete.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from ..outputs import move_into_place, partial_path, remove
from .grid import Window
from .rasters import EPSG_4326_WKT, RasterSpec


def _zarr() -> Any:
    try:
        import zarr
    except ImportError:
        raise ImportError("writing a .zarr store needs the zarr package: pip install 'satclip[gis]'") from None
    return zarr


def _array(
    group: Any, name: str, *, dims: list[str], shape: tuple[int, ...], dtype: str, chunks: tuple[int, ...] | None = None, fill_value: Any = None, **attrs: Any
) -> Any:
    create = getattr(group, "create_array", None) or group.create_dataset  # zarr 3 / zarr 2
    array = create(name, shape=shape, chunks=chunks or shape, dtype=dtype, fill_value=fill_value)
    array.attrs.update({"_ARRAY_DIMENSIONS": dims, **attrs})
    return array


class ZarrWriter:
    """Write (K, h, w) blocks of ``spec`` into a Zarr store at ``path`` (``close()`` finishes and renames)."""

    def __init__(self, path: str | Path, spec: RasterSpec) -> None:
        zarr = _zarr()
        self.path, self.spec = Path(path), spec
        self.partial = partial_path(self.path)
        remove(self.partial)
        major = int(zarr.__version__.split(".")[0])
        root = zarr.open_group(str(self.partial), mode="w", **({"zarr_format": 2} if major >= 3 else {}))
        grid, k = spec.grid, spec.count
        root.attrs.update({"Conventions": "CF-1.8", **spec.attrs})
        axes = (("lat", grid.lat(), "latitude", "degrees_north", "Y"), ("lon", grid.lon(), "longitude", "degrees_east", "X"))
        for name, values, standard, units, axis in axes:
            long_name = f"{standard} of the pixel centre"
            coordinate = _array(root, name, dims=[name], shape=values.shape, dtype="f8", standard_name=standard, long_name=long_name, units=units, axis=axis)
            coordinate[:] = values
        width = max(len(n) for n in spec.band_names)
        band = _array(root, "band", dims=["band"], shape=(k,), dtype=f"<U{width}", fill_value="", long_name="embedding dimension or principal component")
        band[:] = np.array(spec.band_names)
        crs = _array(
            root,
            "crs",
            dims=[],
            shape=(),
            dtype="i4",
            grid_mapping_name="latitude_longitude",
            semi_major_axis=6378137.0,
            inverse_flattening=298.257223563,
            longitude_of_prime_meridian=0.0,
            crs_wkt=EPSG_4326_WKT,
            epsg_code="EPSG:4326",
        )
        crs[...] = 0
        attrs = {"grid_mapping": "crs", "long_name": "SatCLIP location embedding at the pixel centre", "units": "1"}
        if spec.quantiser is not None:
            attrs["comment"] = "int8 codes: value = embedding * scale + offset; -128 is nodata"
            for name, values in (("scale", spec.quantiser.scale), ("offset", spec.quantiser.offset)):
                _array(root, name, dims=["band"], shape=(k,), dtype="f8", long_name=f"int8 {name} per band")[:] = values
        fill = -128 if spec.dtype == "int8" else float("nan")
        self.embedding = _array(
            root,
            "embedding",
            dims=["band", "lat", "lon"],
            shape=(k, grid.height, grid.width),
            dtype=np.dtype(spec.dtype).str,
            chunks=(k, spec.tile, spec.tile),
            fill_value=fill,
            **attrs,
        )
        self.zarr, self.root = zarr, root

    def write(self, window: Window, block: np.ndarray) -> None:
        self.embedding[:, window.row : window.row + window.height, window.col : window.col + window.width] = block

    def close(self) -> None:
        if self.spec.quantiser is not None:
            self.root.attrs["satclip_int8_clipped"] = str(self.spec.quantiser.clipped)
        self.zarr.consolidate_metadata(str(self.partial))
        move_into_place(self.partial, self.path)

    def abort(self) -> None:
        remove(self.partial)


__all__ = ["ZarrWriter"]
