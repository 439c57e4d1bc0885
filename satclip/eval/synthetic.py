"""Point sets and location-dependent fields for the evaluation tasks.

- point sets: uniform on the sphere, a Fibonacci lattice, and the 100 km grid of the equal-area
  projection EPSG:6933 (NSIDC EASE-Grid 2.0 Global: Lambert cylindrical equal-area on the WGS84
  ellipsoid, standard parallels +-30 degrees), computed with the projection formulas (Snyder 1987),
  so no pyproj is needed;
- fields: land/ocean from the 1 km ``global-land-mask`` (offline), the checkerboard classes of the
  Siren(SH) paper, and smooth random fields on the sphere (random low-degree spherical harmonics).

All functions take and return numpy arrays; coordinates are ``(N, 2)`` [lon, lat] in degrees.
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


def checkerboard_classes(lonlat: np.ndarray, n_support: int = 200, n_classes: int = 16) -> np.ndarray:
    """Class of the nearest (great-circle) of ``n_support`` Fibonacci support points; support i has class i mod n_classes."""
    support = unit_vectors(fibonacci_lattice(n_support))
    nearest = np.argmax(unit_vectors(lonlat) @ support.T, axis=1)  # max cosine = min great-circle distance
    return (nearest % n_classes).astype(np.int64)


def smooth_random_field(lonlat: np.ndarray, seed: int, degree: int = 6, decay: float = 1.0) -> np.ndarray:
    """A random field on the sphere: random spherical harmonics of degree < ``degree``, unit variance.

    The coefficients of degree l have standard deviation 1 / (l + 1)^decay: ``decay=1`` lets large
    scales dominate (smooth); ``decay=0`` gives every harmonic the same weight, so most of the
    variance lies at the highest degrees (fine detail).
    """
    import torch

    from ..location.harmonics import spherical_harmonics

    rng = np.random.default_rng(seed)
    l = np.repeat(np.arange(degree), 2 * np.arange(degree) + 1)
    coef = rng.normal(size=degree * degree) / (l + 1.0) ** decay
    coef[0] = 0.0
    basis = spherical_harmonics(torch.as_tensor(lonlat, dtype=torch.float64), degree, convention="orthonormal").numpy()
    field = basis @ coef
    return field / math.sqrt(float(np.sum(coef**2)) / (4 * math.pi))  # the orthonormal basis has mean square 1/(4 pi)


def uniform_times(n: int, seed: int, start: float = 1514764800.0, years: float = 6.0) -> np.ndarray:
    """``n`` acquisition times (Unix seconds UTC) uniform over ``years`` from ``start`` (2018-01-01)."""
    from ..acqtime import SECONDS_PER_YEAR

    return start + np.random.default_rng(seed).uniform(0.0, years * SECONDS_PER_YEAR, n)


def seasonal_signal(lonlat: np.ndarray, time: np.ndarray) -> np.ndarray:
    """sign(lat) sin(2 pi phi), phi = ``year_phase(time)``: a season that peaks in the northern spring (phi = 1/4) and is
    flipped in the south (phi is the fraction of the year since 1 January, within two days). Unknown time: 0."""
    from ..acqtime import year_phase

    season = np.sign(lonlat[:, 1]) * np.sin(2 * math.pi * year_phase(np.asarray(time, dtype=np.float64)))
    return np.nan_to_num(season, nan=0.0)


def climate_gradient(lonlat: np.ndarray) -> np.ndarray:
    """A smooth latitude "climate" field: tanh(4 (cos(lat) - 0.6)), in (-1, 1).

    Warm low latitudes, cold high latitudes, with the steepest change near 53 degrees. Unlike
    cos(lat)^2 it is not a finite sum of spherical harmonics, so SH features cannot fit it exactly.
    """
    return np.tanh(4.0 * (np.cos(np.radians(lonlat[:, 1])) - 0.6))


class SyntheticWorld:
    """Sentinel-2-like band statistics that are a known function of location.

    Each band's mean reflectance (x 10000) mixes, with fixed random weights: land vs ocean (the
    1 km land mask), the latitude "climate" gradient and ``n_fields`` random fields of degree
    < ``field_degree`` with spectral ``field_decay`` (see :func:`smooth_random_field`). The defaults
    (degree 14, decay 1) are smooth: most of their variance is within reach of L=10 harmonics;
    ``field_degree=30, field_decay=0`` puts most of it beyond L=10. The probes of
    ``scripts/bench_pretrain_quality.py`` ask whether pretraining recovered these.

    ``seasonal`` > 0 makes the band means depend on the acquisition time too: a term of
    ``seasonal`` x (a fixed random weight in +-[0.5, 1] per band) x :func:`seasonal_signal` (the
    ``seasonal`` field of ``fields(lonlat, time)``), whose sign flips between the hemispheres. Its
    weights come from their own random stream, so the other weights are those of ``seasonal=0``.
    """

    def __init__(self, n_bands: int = 12, n_fields: int = 3, field_degree: int = 14, seed: int = 0, field_decay: float = 1.0, seasonal: float = 0.0) -> None:
        rng = np.random.default_rng(seed)
        self.n_bands, self.field_seeds, self.field_degree = n_bands, [seed * 100 + k for k in range(n_fields)], field_degree
        self.field_decay = field_decay
        self.base = rng.uniform(600, 1400, n_bands)
        self.w_land = rng.uniform(600, 1800, n_bands) * rng.choice([-0.4, 1.0], n_bands)
        self.w_climate = rng.uniform(-1500, 1500, n_bands)
        self.w_fields = rng.uniform(-300, 300, (n_fields, n_bands))
        season_rng = np.random.default_rng([seed, 13])
        self.w_season = float(seasonal) * season_rng.uniform(0.5, 1.0, n_bands) * season_rng.choice([-1.0, 1.0], n_bands)

    def fields(self, lonlat: np.ndarray, time: np.ndarray | None = None) -> dict[str, np.ndarray]:
        """``land`` (0/1), ``climate`` (latitude gradient) and ``field_k`` at the points; with ``time``
        (Unix seconds, one per point) also ``seasonal`` (:func:`seasonal_signal`)."""
        out = {"land": is_land(lonlat).astype(np.float64), "climate": climate_gradient(lonlat)}
        for k, s in enumerate(self.field_seeds):
            out[f"field_{k}"] = smooth_random_field(lonlat, seed=s, degree=self.field_degree, decay=self.field_decay)
        if time is not None:
            out["seasonal"] = seasonal_signal(lonlat, time)
        return out

    def band_means(self, fields: dict[str, np.ndarray]) -> np.ndarray:
        """(N, n_bands) mean digital numbers (reflectance x 10000), clipped to [50, 9000]."""
        means = self.base + np.outer(fields["land"], self.w_land) + np.outer(fields["climate"], self.w_climate)
        for k, w in enumerate(self.w_fields):
            means = means + np.outer(fields[f"field_{k}"], w)
        if "seasonal" in fields:
            means = means + np.outer(fields["seasonal"], self.w_season)
        return np.clip(means, 50, 9000)
