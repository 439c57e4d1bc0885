"""Synthetic worlds for the benchmarks and tests: fields on the sphere whose values are known.

Smooth random fields (random low-degree spherical harmonics), a latitude "climate" gradient, a
seasonal signal, acquisition times, and :class:`SyntheticWorld`, Sentinel-2-like band statistics
made from them (``scripts/bench_pretrain_quality.py``). Not used by any ``satclip`` command: the
import-layer contract (``pyproject.toml``) keeps this package above every product floor.

All functions take and return numpy arrays; coordinates are ``(N, 2)`` [lon, lat] in degrees.
"""

from __future__ import annotations

import math

import numpy as np

from ..eval.points import is_land


def smooth_random_field(lonlat: np.ndarray, seed: int, *, degree: int = 6, decay: float = 1.0) -> np.ndarray:
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


def uniform_times(n: int, seed: int, *, start: float = 1514764800.0, years: float = 6.0) -> np.ndarray:
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

    def __init__(self, n_bands: int = 12, n_fields: int = 3, *, field_degree: int = 14, seed: int = 0, field_decay: float = 1.0, seasonal: float = 0.0) -> None:
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
