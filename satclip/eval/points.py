"""Point sets on the sphere and the labels of the locbench tasks.

- point sets: uniform on the sphere, a Fibonacci lattice, and the 100 km grid of the equal-area
  projection EPSG:6933 (NSIDC EASE-Grid 2.0 Global: Lambert cylindrical equal-area on the WGS84
  ellipsoid, standard parallels +-30 degrees), computed with the projection formulas (Snyder 1987),
  so no pyproj is needed;
- labels: land/ocean from the 1 km ``global-land-mask`` (offline; also the coastline of the
  embedding maps and ``satclip locate``'s land-only gallery) and the checkerboard classes of the
  Siren(SH) paper.

All functions take and return numpy arrays; coordinates are ``(N, 2)`` [lon, lat] in degrees. The
synthetic worlds of the benchmarks and tests are in :mod:`satclip.testing.worlds`.
"""

from __future__ import annotations

import math

import numpy as np

# EPSG:6933 (WGS84 ellipsoid, standard parallel 30 degrees) and its published extent.
_A = 6378137.0
_F = 1 / 298.257223563
_E2 = _F * (2 - _F)
_E = math.sqrt(_E2)
_K0 = math.cos(math.radians(30.0)) / math.sqrt(1 - _E2 * math.sin(math.radians(30.0)) ** 2)
EASE2_X_MAX = 17367530.45
EASE2_Y_MAX = 7314540.83


def uniform_sphere(n: int, seed: int) -> np.ndarray:
    """``n`` points uniform on the sphere (uniform lon, arcsin-distributed lat)."""
    rng = np.random.default_rng(seed)
    lon = rng.uniform(-180.0, 180.0, n)
    lat = np.degrees(np.arcsin(rng.uniform(-1.0, 1.0, n)))
    return np.stack([lon, lat], axis=1)


def fibonacci_lattice(n: int) -> np.ndarray:
    """``n`` nearly evenly spaced points on the sphere (golden-angle spiral, offset 0.5)."""
    i = np.arange(n, dtype=np.float64) + 0.5
    lat = np.degrees(np.arcsin(1 - 2 * i / n))
    lon = np.mod(np.degrees(i * math.pi * (3 - math.sqrt(5))) + 180.0, 360.0) - 180.0
    return np.stack([lon, lat], axis=1)


def _authalic_q(sin_phi: np.ndarray) -> np.ndarray:
    es = _E * sin_phi
    return (1 - _E2) * (sin_phi / (1 - es**2) - np.log((1 - es) / (1 + es)) / (2 * _E))


def ease2_forward(lonlat: np.ndarray) -> np.ndarray:
    """[lon, lat] degrees -> EPSG:6933 [x, y] metres."""
    lon, lat = np.radians(lonlat[:, 0]), np.radians(lonlat[:, 1])
    return np.stack([_A * _K0 * lon, _A * _authalic_q(np.sin(lat)) / (2 * _K0)], axis=1)


def ease2_inverse(xy: np.ndarray) -> np.ndarray:
    """EPSG:6933 [x, y] metres -> [lon, lat] degrees (authalic-latitude series, error < 1e-9 deg)."""
    qp = _authalic_q(np.array(1.0))
    beta = np.arcsin(np.clip(2 * _K0 * xy[:, 1] / (_A * qp), -1.0, 1.0))
    e4, e6 = _E2**2, _E2**3
    phi = (
        beta
        + (_E2 / 3 + 31 * e4 / 180 + 517 * e6 / 5040) * np.sin(2 * beta)
        + (23 * e4 / 360 + 251 * e6 / 3780) * np.sin(4 * beta)
        + (761 * e6 / 45360) * np.sin(6 * beta)
    )
    return np.stack([np.degrees(xy[:, 0] / (_A * _K0)), np.degrees(phi)], axis=1)


def ease2_grid(spacing_m: float = 100_000.0) -> np.ndarray:
    """Centres of whole grid cells inside the EPSG:6933 extent, symmetric about the origin, as [lon, lat].

    At 100 km: 347 x 146 = 50,662 points up to +-81 degrees latitude, each standing for the same area.
    """
    nx, ny = int(2 * EASE2_X_MAX // spacing_m), int(2 * EASE2_Y_MAX // spacing_m)
    x = (np.arange(nx) - (nx - 1) / 2) * spacing_m  # centred, symmetric about the equator and 0 degrees
    y = (np.arange(ny) - (ny - 1) / 2) * spacing_m
    xx, yy = np.meshgrid(x, y)
    return ease2_inverse(np.stack([xx.ravel(), yy.ravel()], axis=1))


def is_land(lonlat: np.ndarray) -> np.ndarray:
    """Boolean land mask at the points, from the 1 km GLOBE-based ``global-land-mask`` package.

    The package loads a ~1 GB boolean array on first use (about 4 s).
    """
    from global_land_mask import globe

    return np.asarray(globe.is_land(lonlat[:, 1].astype(np.float64), lonlat[:, 0].astype(np.float64)), dtype=bool)


def unit_vectors(lonlat: np.ndarray) -> np.ndarray:
    """[lon, lat] degrees -> (N, 3) points on the unit sphere."""
    lon, lat = np.radians(lonlat[:, 0]), np.radians(lonlat[:, 1])
    return np.stack([np.cos(lat) * np.cos(lon), np.cos(lat) * np.sin(lon), np.sin(lat)], axis=1)


def checkerboard_classes(lonlat: np.ndarray, n_support: int = 200, *, n_classes: int = 16) -> np.ndarray:
    """Class of the nearest (great-circle) of ``n_support`` Fibonacci support points; support i has class i mod n_classes."""
    support = unit_vectors(fibonacci_lattice(n_support))
    nearest = np.argmax(unit_vectors(lonlat) @ support.T, axis=1)  # max cosine = min great-circle distance
    return (nearest % n_classes).astype(np.int64)
