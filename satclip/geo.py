"""Coordinates: the one validator for (lon, lat) inputs and great-circle distances.

Every entry point that takes coordinates (location encoders, the loader, ``satclip embed``)
validates them here, so the error messages are the same everywhere.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # torch is imported by the functions that use it: the shard readers' worker processes need only the rule
    import torch

EARTH_RADIUS_KM = 6371.0088
LONLAT_RULE = "finite degrees with -90 <= lat <= 90; any finite longitude, wrapped into [-180, 180]"


def valid_lonlat(lon: Any, lat: Any) -> Any:
    """The one coordinate rule (:data:`LONLAT_RULE`), elementwise on floats, numpy arrays or torch tensors:
    True where lat is finite with |lat| <= 90 and lon is finite (any value: longitudes are wrapped)."""
    return (abs(lat) <= 90) & (abs(lon) < math.inf)  # NaN compares False on both sides


def lonlat_problem(lon: float, lat: float) -> str | None:
    """Why one (lon, lat) pair breaks :data:`LONLAT_RULE`, or None when it is valid."""
    if valid_lonlat(lon, lat):
        return None
    return f"coordinates out of range lon={lon!r}, lat={lat!r} (expected {LONLAT_RULE})"


def wrap_longitude(lon: torch.Tensor) -> torch.Tensor:
    """Wrap longitudes outside [-180, 180] into that range; values inside are left untouched."""
    import torch

    outside = (lon < -180) | (lon > 180)
    if not bool(outside.any()):
        return lon
    wrapped = torch.remainder(lon + 180.0, 360.0) - 180.0
    return torch.where(outside, wrapped, lon)


def validate_lonlat(lonlat: torch.Tensor, name: str = "lonlat", *, with_time: bool = False) -> torch.Tensor:
    """Check an (N, 2) [lon, lat] tensor in degrees and return it with longitudes wrapped.

    Raises ``ValueError`` for a wrong shape or rows breaking :data:`LONLAT_RULE` (non-finite values,
    |lat| > 90), saying how many rows are bad and showing the first one. Longitudes outside
    [-180, 180] are wrapped.

    ``with_time``: the input of a time-aware tower, (N, 3) [lon, lat, t] with t in Unix seconds UTC
    (:mod:`satclip.acqtime`); the same rules for lon/lat, and t must be finite or NaN (unknown).
    """
    import torch

    columns, layout = (3, "[lon, lat, t] (degrees, Unix seconds UTC; t NaN = unknown)") if with_time else (2, "[lon, lat] in degrees")
    if not isinstance(lonlat, torch.Tensor):
        raise TypeError(f"{name}: expected a torch.Tensor of shape (N, {columns}), got {type(lonlat).__name__}")
    if lonlat.ndim != 2 or lonlat.shape[1] != columns:
        hint = ""
        if lonlat.ndim == 2 and lonlat.shape[1] in (2, 3):
            hint = (
                "; this tower takes acquisition time: pass [lon, lat, t] (t NaN where unknown)"
                if with_time
                else "; this tower takes no time: pass [lon, lat] only"
            )
        raise ValueError(f"{name}: expected shape (N, {columns}) holding {layout}, got {tuple(lonlat.shape)}{hint}")
    if not lonlat.is_floating_point():
        lonlat = lonlat.double()
    if lonlat.shape[0] == 0:
        return lonlat
    if with_time:
        infinite = torch.isinf(lonlat[:, 2])
        if bool(infinite.any()):
            rows = torch.nonzero(infinite).flatten()
            raise ValueError(
                f"{name}: {rows.numel()} of {lonlat.shape[0]} rows have an infinite time t (use a finite Unix time, "
                f"or NaN for unknown); first bad row {int(rows[0])}: t={float(lonlat[rows[0], 2])!r}"
            )
        place = lonlat[:, :2]
        checked = validate_lonlat(place, name)
        return lonlat if checked is place else torch.cat([checked, lonlat[:, 2:]], dim=1)
    # One pass in the common case: min/max propagate NaN, so finite in-range extremes prove every row valid.
    lo, hi = torch.aminmax(lonlat, dim=0)
    if bool(((lo[1] >= -90) & (hi[1] <= 90) & (lo[0] >= -180) & (hi[0] <= 180)).item()):
        return lonlat
    bad = ~valid_lonlat(lonlat[:, 0], lonlat[:, 1])
    if bool(bad.any()):
        rows = torch.nonzero(bad).flatten()
        first = int(rows[0])
        lon, lat = (float(v) for v in lonlat[first])
        raise ValueError(
            f"{name}: {rows.numel()} of {lonlat.shape[0]} rows are not valid [lon, lat] degrees "
            f"(non-finite or |lat| > 90; expected {LONLAT_RULE}); first bad row {first}: lon={lon!r}, lat={lat!r}"
        )
    return torch.stack([wrap_longitude(lonlat[:, 0]), lonlat[:, 1]], dim=1)


def validate_bbox(bbox: tuple[float, float, float, float] | list[float], name: str = "bbox", *, crossing: bool = False) -> tuple[float, float, float, float]:
    """Check a (west, south, east, north) box in degrees and return it as floats.

    Raises ``ValueError`` naming ``name`` for non-finite values, longitudes outside [-180, 180],
    latitudes outside [-90, 90], south > north (said first: an inverted box is not an antimeridian
    crossing), an empty box, or west > east: a box crossing the antimeridian is rejected (embed it
    as two boxes, west..180 and -180..east) rather than split silently. ``crossing``: a selection box
    (``satclip shards --bbox``), where west > east is the box across the antimeridian.
    """
    if len(bbox) != 4:
        raise ValueError(f"{name}: expected 4 numbers west south east north, got {len(bbox)}")
    west, south, east, north = (float(v) for v in bbox)
    text = f"{name} (west={west!r}, south={south!r}, east={east!r}, north={north!r})"
    if not all(math.isfinite(v) for v in (west, south, east, north)):
        raise ValueError(f"{text}: values must be finite degrees")
    if not (-180 <= west <= 180 and -180 <= east <= 180):
        raise ValueError(f"{text}: longitudes must be in [-180, 180]")
    if not (-90 <= south <= 90 and -90 <= north <= 90):
        raise ValueError(f"{text}: latitudes must be in [-90, 90]")
    if south > north:
        raise ValueError(f"{text}: south > north; the order is west south east north (north {south:g}, south {north:g}?)")
    if west > east and not crossing:
        raise ValueError(
            f"{text}: west > east crosses the antimeridian; embed two boxes instead ({west:g}..180 and -180..{east:g}), "
            f"or swap them if you meant west {east:g}, east {west:g}"
        )
    if west == east or south == north:
        raise ValueError(f"{text}: the box is empty (need west < east and south < north)")
    return west, south, east, north


def great_circle_km(lonlat_a: torch.Tensor, lonlat_b: torch.Tensor) -> torch.Tensor:
    """Haversine distance in km between matching rows of two (N, 2) [lon, lat] degree tensors."""
    import torch

    lon1, lat1 = torch.deg2rad(lonlat_a).unbind(-1)
    lon2, lat2 = torch.deg2rad(lonlat_b).unbind(-1)
    h = torch.sin((lat2 - lat1) / 2) ** 2 + torch.cos(lat1) * torch.cos(lat2) * torch.sin((lon2 - lon1) / 2) ** 2
    return 2 * EARTH_RADIUS_KM * torch.asin(torch.clamp(h, 0.0, 1.0).sqrt())


def lonlat_from_georeference(path_or_dataset) -> tuple[float, float]:
    """Centre (lon, lat) in WGS84 degrees of a georeferenced raster.

    Accepts a path, the raw bytes of a GeoTIFF, or an open rasterio dataset. The centre of the
    raster (pixel coordinates W/2, H/2) is transformed from the raster's CRS with
    ``rasterio.warp.transform``; for S2-100K patches this agrees with their index to ~1e-6 degrees.
    Raises ``ValueError`` when the raster has no CRS or no geotransform.
    """
    import rasterio
    from rasterio.io import MemoryFile

    if isinstance(path_or_dataset, (bytes, bytearray, memoryview)):
        with MemoryFile(bytes(path_or_dataset)) as memfile, memfile.open() as dataset:
            return lonlat_from_georeference(dataset)
    if not hasattr(path_or_dataset, "transform"):
        with rasterio.open(path_or_dataset) as dataset:
            return lonlat_from_georeference(dataset)
    dataset = path_or_dataset
    if dataset.crs is None or dataset.transform.is_identity:
        raise ValueError(f"{dataset.name}: no georeference (CRS {dataset.crs}, transform {tuple(dataset.transform)[:6]})")
    (lon,), (lat,) = lonlat_of_pixels(dataset.crs, dataset.transform, cols=[dataset.width / 2], rows=[dataset.height / 2])
    return lon, lat


def lonlat_of_pixels(crs, geotransform, *, cols: list[float], rows: list[float]) -> tuple[list[float], list[float]]:
    """WGS84 (lons, lats) in degrees of pixel coordinates (``cols``, ``rows``; 0.5 is a first pixel's
    centre) of a raster with ``crs`` and affine ``geotransform``: the centre of every cut patch,
    and through :func:`lonlat_from_georeference` of every whole raster, is transformed here."""
    from rasterio.warp import transform

    t = geotransform
    xs = [t.a * c + t.b * r + t.c for c, r in zip(cols, rows)]  # explicit: affine's operators vary by version
    ys = [t.d * c + t.e * r + t.f for c, r in zip(cols, rows)]
    lons, lats = transform(crs, "EPSG:4326", xs, ys)
    return [float(v) for v in lons], [float(v) for v in lats]


__all__ = [
    "EARTH_RADIUS_KM",
    "LONLAT_RULE",
    "great_circle_km",
    "lonlat_from_georeference",
    "lonlat_of_pixels",
    "lonlat_problem",
    "valid_lonlat",
    "validate_bbox",
    "validate_lonlat",
    "wrap_longitude",
]
