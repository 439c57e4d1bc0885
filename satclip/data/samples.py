"""Checking one raw sample: decode the payload, check bands, size and coordinates, crop.

Anything wrong raises :class:`Skip` with its kind (one of
:data:`satclip.data.errors.SKIP_KINDS`) and the real cause; the stream counts and logs it.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np

from ..acqtime import parse_time
from ..geo import lonlat_problem
from .payload import PAYLOAD_EXTENSIONS, decode
from .transforms import S2_BANDS, band_indices, crop, crop_offsets, target_bands


def _to_float(value: object) -> float:
    try:
        return float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return math.nan


class Skip(Exception):
    """A sample is unusable; ``kind`` is one of SKIP_KINDS."""

    def __init__(self, kind: str, cause: str) -> None:
        super().__init__(cause)
        self.kind = kind


class MissingCoords(Skip):
    """A sample has no coordinates at all (no record, no index entry, no georeference)."""

    def __init__(self, cause: str) -> None:
        super().__init__("coords", cause)


class Decoded(NamedTuple):
    """One checked sample: a cropped (C, h, w) uint16 view, its band indices for :func:`select_bands`,
    lonlat (2,) float64, key, and acquisition time (Unix seconds UTC, NaN unknown)."""

    image: np.ndarray
    bands: np.ndarray
    lonlat: np.ndarray
    key: str
    time: float


@dataclass
class SampleDecoder:
    """Raw sample -> :class:`Decoded` (cropped image, band plan, lonlat, key, time); raises :class:`Skip`.

    Bands come from the sample's JSON record, else ``source_bands`` (the manifest's, else
    S2-100K's). Coordinates: the JSON record, else ``index`` (``index.csv`` as read by
    :func:`satclip.data.shards.read_index`: file name -> (lon, lat)), else the tif's
    own georeference. Time: the record's ``time`` (ISO 8601, see :mod:`satclip.acqtime`), else NaN; a
    record whose time does not parse is skipped (kind ``time``). ``crop_size`` None keeps the full image (all must then share one size).
    ``require_coords=False`` gives NaN coordinates to a sample that has none, instead of skipping
    it (embedding images whose location is unknown); invalid coordinates are still skipped."""

    crop_size: int | None = 224
    bands: tuple[str, ...] | None = None
    insert_b10: bool = False
    source_bands: tuple[str, ...] = S2_BANDS
    index: dict[str, tuple[float, float]] | None = None
    require_coords: bool = True

    def __post_init__(self) -> None:
        self._plans: dict[tuple[str, ...], np.ndarray] = {}
        self.output_bands = target_bands(self.source_bands, self.bands, insert_b10=self.insert_b10)
        self._plan(self.source_bands)  # a bad band list fails here, not in the workers

    def _plan(self, source: tuple[str, ...]) -> np.ndarray:
        if source not in self._plans:
            target = target_bands(source, self.bands, insert_b10=self.insert_b10)
            if target != self.output_bands:
                raise Skip("shape", f"bands {list(source)} give {list(target)}, other samples {list(self.output_bands)}")
            self._plans[source] = band_indices(source, target)
        return self._plans[source]

    def __call__(self, raw: dict, rng: np.random.Generator | None) -> Decoded:
        """Decode and check one raw sample. ``rng`` None gives the centre crop (evaluation)."""
        key = raw["__key__"]
        ext = next((e for e in PAYLOAD_EXTENSIONS if e in raw), None)
        if ext is None:
            found = sorted(k for k in raw if not k.startswith("__"))
            raise Skip("incomplete", f"no image payload ({'/'.join(PAYLOAD_EXTENSIONS)}); the sample has {found}")
        meta = self._meta(raw)
        try:
            image = decode(ext, raw[ext])
        except Exception as exn:  # noqa: BLE001 - PayloadError, or anything GDAL raises on garbage
            raise Skip("decode", f"{ext}: {exn}") from None
        source = tuple(meta.get("bands") or self.source_bands)
        self._check_shape(image, source, meta=meta)
        try:
            lonlat = np.array(self._lonlat(key, ext, raw=raw, meta=meta), dtype=np.float64)
        except MissingCoords:
            if self.require_coords:
                raise
            lonlat = np.full(2, np.nan)
        time = self._time(meta)
        if self.crop_size is not None:
            top, left = crop_offsets(image.shape[1], image.shape[2], size=self.crop_size, rng=rng)
            image = crop(image, self.crop_size, top=top, left=left)
        return Decoded(image, self._plan(source), lonlat, key, time)

    @staticmethod
    def _time(meta: dict) -> float:
        text = meta.get("time")
        if text is None:
            return math.nan
        try:
            return parse_time(str(text), name="json record's time")
        except ValueError as exn:
            raise Skip("time", str(exn)) from None

    @staticmethod
    def _meta(raw: dict) -> dict:
        if "json" not in raw:
            return {}
        try:
            meta = json.loads(raw["json"])
        except (ValueError, UnicodeDecodeError) as exn:
            raise Skip("incomplete", f"json record does not parse: {exn}") from None
        if not isinstance(meta, dict):
            raise Skip("incomplete", f"json record is a {type(meta).__name__}, expected an object")
        return meta

    def _check_shape(self, image: np.ndarray, source: tuple[str, ...], *, meta: dict) -> None:
        if image.dtype != np.uint16:
            raise Skip("shape", f"dtype {image.dtype}, expected uint16 digital numbers")
        if image.ndim != 3 or image.shape[0] != len(source):
            raise Skip("shape", f"shape {image.shape}, expected {len(source)} bands {list(source)}")
        if meta.get("shape") is not None and tuple(meta["shape"]) != image.shape:
            raise Skip("shape", f"shape {image.shape}, but its record says {tuple(meta['shape'])}")
        if self.crop_size is not None and min(image.shape[1:]) < self.crop_size:
            raise Skip("shape", f"size {image.shape[1]}x{image.shape[2]} is smaller than the crop {self.crop_size}")

    def _lonlat(self, key: str, ext: str, *, raw: dict, meta: dict) -> tuple[float, float]:
        if "lon" in meta or "lat" in meta:
            lon, lat = _to_float(meta.get("lon")), _to_float(meta.get("lat"))
        elif self.index is not None:
            name = f"{key.rpartition('/')[2]}.{ext}"
            if name not in self.index:
                raise MissingCoords(f"no json record and {name!r} is not in the index")
            lon, lat = self.index[name]
        elif ext == "tif":
            from ..geo import lonlat_from_georeference

            try:
                lon, lat = lonlat_from_georeference(raw[ext])
            except Exception as exn:  # noqa: BLE001 - no CRS, no transform, PROJ failure
                raise MissingCoords(f"no json record, no index, and no usable georeference: {exn}") from None
        else:
            raise MissingCoords("no coordinates: no json record, no index, and the payload has no georeference")
        problem = lonlat_problem(lon, lat)
        if problem:
            raise Skip("coords", problem)
        return lon, lat


__all__ = ["Decoded", "MissingCoords", "SampleDecoder", "Skip"]
