"""GeoParquet for point tables: a WKB geometry column and the file's geo metadata.

Follows GeoParquet 1.1.0 (https://geoparquet.org/releases/v1.1.0/): geo is a JSON object with
version, primary_column and columns -> {encoding "WKB", geometry_types
["Point"], crs (PROJJSON of OGC:CRS84, longitude then latitude), bbox}. Points are
ISO WKB, little-endian, 2D, built with numpy (no shapely needed); GeoPandas reads the file with
geopandas.read_parquet and QGIS / GDAL open it as a vector layer.
"""

from __future__ import annotations

import json
from typing import Any

import numpy as np

VERSION = "1.1.0"
COLUMN = "geometry"
# PROJJSON of OGC:CRS84 (WGS 84, longitude then latitude), as pyproj writes it
CRS84_PROJJSON: dict[str, Any] = json.loads(
    """{"$schema": "https://proj.org/schemas/v0.7/projjson.schema.json", "type": "GeographicCRS", "name": "WGS 84 (CRS84)", "datum_ensemble": {"name": "World Geodetic System 1984 ensemble", "members": [{"name": "World Geodetic System 1984 (Transit)", "id": {"authority": "EPSG", "code": 1166}}, {"name": "World Geodetic System 1984 (G730)", "id": {"authority": "EPSG", "code": 1152}}, {"name": "World Geodetic System 1984 (G873)", "id": {"authority": "EPSG", "code": 1153}}, {"name": "World Geodetic System 1984 (G1150)", "id": {"authority": "EPSG", "code": 1154}}, {"name": "World Geodetic System 1984 (G1674)", "id": {"authority": "EPSG", "code": 1155}}, {"name": "World Geodetic System 1984 (G1762)", "id": {"authority": "EPSG", "code": 1156}}, {"name": "World Geodetic System 1984 (G2139)", "id": {"authority": "EPSG", "code": 1309}}, {"name": "World Geodetic System 1984 (G2296)", "id": {"authority": "EPSG", "code": 1383}}], "ellipsoid": {"name": "WGS 84", "semi_major_axis": 6378137, "inverse_flattening": 298.257223563}, "accuracy": "2.0", "id": {"authority": "EPSG", "code": 6326}}, "coordinate_system": {"subtype": "ellipsoidal", "axis": [{"name": "Geodetic longitude", "abbreviation": "Lon", "direction": "east", "unit": "degree"}, {"name": "Geodetic latitude", "abbreviation": "Lat", "direction": "north", "unit": "degree"}]}, "scope": "Not known.", "area": "World.", "bbox": {"south_latitude": -90, "west_longitude": -180, "north_latitude": 90, "east_longitude": 180}, "id": {"authority": "OGC", "code": "CRS84"}}"""
)

_WKB_POINT = np.dtype([("order", "u1"), ("type", "<u4"), ("x", "<f8"), ("y", "<f8")])  # 21 bytes, no padding


def wkb_points(lonlat: np.ndarray) -> Any:
    """(n, 2) [lon, lat] -> a pyarrow binary array of little-endian WKB points."""
    import pyarrow as pa

    n = len(lonlat)
    records = np.empty(n, dtype=_WKB_POINT)
    records["order"], records["type"] = 1, 1
    records["x"], records["y"] = lonlat[:, 0], lonlat[:, 1]
    offsets = np.arange(0, (n + 1) * _WKB_POINT.itemsize, _WKB_POINT.itemsize, dtype=np.int32)
    return pa.Array.from_buffers(pa.binary(), n, [None, pa.py_buffer(offsets), pa.py_buffer(records.tobytes())])


def geo_metadata(bbox: list[float] | None) -> dict[str, Any]:
    """The geo file metadata of a table whose geometry column holds lon/lat points within bbox."""
    column: dict[str, Any] = {"encoding": "WKB", "geometry_types": ["Point"], "crs": CRS84_PROJJSON}
    if bbox is not None:
        column["bbox"] = bbox
    return {"version": VERSION, "primary_column": COLUMN, "columns": {COLUMN: column}}


class BBox:
    """Running [xmin, ymin, xmax, ymax] of the points written so far."""

    def __init__(self) -> None:
        self.low = np.array([np.inf, np.inf])
        self.high = -self.low

    def update(self, lonlat: np.ndarray) -> None:
        if len(lonlat):
            self.low = np.minimum(self.low, lonlat.min(0))
            self.high = np.maximum(self.high, lonlat.max(0))

    def value(self) -> list[float] | None:
        return None if not np.isfinite(self.low).all() else [*map(float, self.low), *map(float, self.high)]


__all__ = ["COLUMN", "CRS84_PROJJSON", "VERSION", "BBox", "geo_metadata", "wkb_points"]
