"""Positional encodings compared in the Siren(SH) paper (Russwurm et al., ICLR 2024).

Every encoding maps an (N, 2) tensor of [lon, lat] DEGREES to (N, output_dim) features, computed
in float64 and returned in the input's floating dtype. Coordinates are validated like everywhere
else (``ValueError`` for a wrong shape, non-finite values or |lat| > 90; longitudes wrapped).

Single-scale encodings (no hyper-parameters), lambda = lon and phi = lat in radians:

- ``direct`` (2): [lambda, phi].
- ``cartesian3d`` (3): the unit vector [cos phi cos lambda, cos phi sin lambda, sin phi].
- ``wrap`` (4): [cos lambda, sin lambda, cos phi, sin phi], the Siren(SH) comparison's form of
  Mac Aodha et al.'s (2019) wrap (theirs takes sin/cos of pi * lat / 90).

Multi-scale encodings (Mai et al.: Space2Vec, ICLR 2020, for ``grid`` and ``theory``; Sphere2Vec,
ISPRS 2023, for the ``sphere*`` family) with S = ``frequency_num`` scales. As in the Siren(SH)
authors' implementation (so that their tuned values apply unchanged: min_radius 1..73 and
max_radius 360, the default), the scales are timescales in DEGREES spaced geometrically,
r_s = min_radius * (max_radius / min_radius) ** (s / (S - 1)), s = 0..S-1, and a coordinate
c (degrees) enters as the angle c / r_s. With lambda_s = lon / r_s and phi_s = lat / r_s:

- ``grid`` (4S): per coordinate, per scale: [sin, cos] of lambda_s, then of phi_s.
- ``theory`` (6S): per scale, [sin, cos] of the projections of (lon, lat) onto three unit vectors
  120 degrees apart, divided by r_s.
- ``spherec`` (3S): per scale [sin phi_s, cos phi_s cos lambda_s, cos phi_s sin lambda_s].
- ``spherec+`` (6S): per scale [sin phi_s, cos phi_s, sin lambda_s, cos lambda_s,
  cos phi_s cos lambda_s, cos phi_s sin lambda_s].
- ``spherem`` (5S): per scale [sin phi_s, cos phi_s cos lambda, cos phi cos lambda_s,
  cos phi_s sin lambda, cos phi sin lambda_s] (lambda, phi: the point itself, in radians).
- ``spherem+`` (8S): per scale [sin phi_s, cos phi_s, sin lambda_s, cos lambda_s] followed by the
  four mixed terms of ``spherem``.

Differences from the authors' code, on purpose: their sphere* encodings repeat every column twice
(dimensions 6S, 12S, 10S, 16S; the repeats carry no information), their spherem/spherem+ take
sin/cos of the raw degree values for the single-scale terms (Sphere2Vec defines them in radians),
and their ``direct`` subtracts pi from both radians. Here the dimensions are those of the papers.
``spherecplus`` and ``spheremplus`` (the authors' spellings, used in their hyper-parameter table)
are accepted as aliases of ``spherec+`` and ``spherem+``.
"""

from __future__ import annotations

import math
import numbers

import torch
from torch import nn

from ..geo import validate_lonlat
from .registry import register_encoding


def integer_hparam(name: str, value: object, *, minimum: int = 1) -> int:
    """``value`` as an int >= ``minimum``; integral floats (16.0, as read from a CSV) are accepted."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not float(value).is_integer():
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")
    number = int(float(value))
    if number < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")
    return number


class _Encoding(nn.Module):
    """Base: validate [lon, lat] degrees, encode in float64, return in the input's float dtype."""

    output_dim: int

    def forward(self, lonlat: torch.Tensor) -> torch.Tensor:
        dtype = lonlat.dtype if lonlat.dtype in (torch.float32, torch.float64) else torch.float64
        lon, lat = validate_lonlat(lonlat).to(torch.float64).unbind(1)
        return self.encode(lon, lat).to(dtype)

    def encode(self, lon: torch.Tensor, lat: torch.Tensor) -> torch.Tensor:
        """(N,) lon, (N,) lat in float64 degrees -> (N, output_dim)."""
        raise NotImplementedError


@register_encoding("direct")
class Direct(_Encoding):
    """[lon, lat] in radians: the raw coordinates, no periodicity."""

    output_dim = 2

    def encode(self, lon: torch.Tensor, lat: torch.Tensor) -> torch.Tensor:
        return torch.deg2rad(torch.stack([lon, lat], dim=1))


@register_encoding("cartesian3d")
class Cartesian3D(_Encoding):
    """The point on the unit sphere: [cos(lat) cos(lon), cos(lat) sin(lon), sin(lat)]."""

    output_dim = 3

    def encode(self, lon: torch.Tensor, lat: torch.Tensor) -> torch.Tensor:
        lon, lat = torch.deg2rad(lon), torch.deg2rad(lat)
        return torch.stack([torch.cos(lat) * torch.cos(lon), torch.cos(lat) * torch.sin(lon), torch.sin(lat)], dim=1)


@register_encoding("wrap")
class Wrap(_Encoding):
    """[cos(lon), sin(lon), cos(lat), sin(lat)]: continuous across the antimeridian."""

    output_dim = 4

    def encode(self, lon: torch.Tensor, lat: torch.Tensor) -> torch.Tensor:
        lon, lat = torch.deg2rad(lon), torch.deg2rad(lat)
        return torch.stack([torch.cos(lon), torch.sin(lon), torch.cos(lat), torch.sin(lat)], dim=1)


class _MultiScale(_Encoding):
    """Base of the sinusoidal multi-scale encodings: ``frequency_num`` geometric timescales in degrees."""

    columns_per_scale: int

    def __init__(self, frequency_num: int = 16, min_radius: float = 10.0, *, max_radius: float = 360.0) -> None:
        super().__init__()
        self.frequency_num = integer_hparam("frequency_num", frequency_num)
        self.min_radius, self.max_radius = float(min_radius), float(max_radius)
        if not (0 < self.min_radius <= self.max_radius < math.inf):
            raise ValueError(f"need 0 < min_radius <= max_radius < inf, got min_radius={min_radius!r}, max_radius={max_radius!r}")
        self.output_dim = self.columns_per_scale * self.frequency_num

    def timescales(self) -> torch.Tensor:
        """(S,) float64 timescales r_s in degrees, geometric from min_radius to max_radius."""
        S = self.frequency_num
        steps = torch.arange(S, dtype=torch.float64) / max(S - 1, 1)
        return self.min_radius * (self.max_radius / self.min_radius) ** steps

    def scaled(self, coord: torch.Tensor) -> torch.Tensor:
        """(N,) degrees -> (N, S) angles coord / r_s."""
        return coord[:, None] / self.timescales().to(coord.device)

    def extra_repr(self) -> str:
        return f"frequency_num={self.frequency_num}, min_radius={self.min_radius}, max_radius={self.max_radius}, output_dim={self.output_dim}"


def _per_scale(*terms: torch.Tensor) -> torch.Tensor:
    """Interleave (N, S) terms scale-major: (N, S * len(terms)), columns [t0(s0), t1(s0), ..., t0(s1), ...]."""
    return torch.stack(terms, dim=2).flatten(1)


@register_encoding("grid")
class Grid(_MultiScale):
    """Space2Vec grid: [sin, cos](lon / r_s) for every scale, then the same for lat."""

    columns_per_scale = 4

    def encode(self, lon: torch.Tensor, lat: torch.Tensor) -> torch.Tensor:
        a, b = self.scaled(lon), self.scaled(lat)
        return torch.cat([_per_scale(torch.sin(a), torch.cos(a)), _per_scale(torch.sin(b), torch.cos(b))], dim=1)


@register_encoding("theory")
class Theory(_MultiScale):
    """Space2Vec theory: [sin, cos] of (lon, lat) projected on unit vectors at 0, 120, 240 degrees, per scale."""

    columns_per_scale = 6

    def encode(self, lon: torch.Tensor, lat: torch.Tensor) -> torch.Tensor:
        half_sqrt3 = math.sqrt(3.0) / 2.0
        projections = (lon, -0.5 * lon + half_sqrt3 * lat, -0.5 * lon - half_sqrt3 * lat)
        terms = []
        for p in projections:
            angle = self.scaled(p)
            terms += [torch.sin(angle), torch.cos(angle)]
        return _per_scale(*terms)


@register_encoding("spherec")
class SphereC(_MultiScale):
    """Sphere2Vec sphereC: the unit vector of the scaled angles, per scale."""

    columns_per_scale = 3

    def encode(self, lon: torch.Tensor, lat: torch.Tensor) -> torch.Tensor:
        a, b = self.scaled(lon), self.scaled(lat)
        cos_b = torch.cos(b)
        return _per_scale(torch.sin(b), cos_b * torch.cos(a), cos_b * torch.sin(a))


@register_encoding("spherec+")
@register_encoding("spherecplus")
class SphereCPlus(_MultiScale):
    """Sphere2Vec sphereC+: sphereC plus grid's sin/cos of each scaled angle."""

    columns_per_scale = 6

    def encode(self, lon: torch.Tensor, lat: torch.Tensor) -> torch.Tensor:
        a, b = self.scaled(lon), self.scaled(lat)
        cos_b = torch.cos(b)
        return _per_scale(torch.sin(b), cos_b, torch.sin(a), torch.cos(a), cos_b * torch.cos(a), cos_b * torch.sin(a))


def _mixed_terms(lon: torch.Tensor, lat: torch.Tensor, *, a: torch.Tensor, b: torch.Tensor) -> list[torch.Tensor]:
    """sphereM's terms mixing one scaled angle with the other coordinate at scale 1 (radians)."""
    lon_r, lat_r = torch.deg2rad(lon)[:, None], torch.deg2rad(lat)[:, None]
    cos_b, cos_lat = torch.cos(b), torch.cos(lat_r)
    return [cos_b * torch.cos(lon_r), cos_lat * torch.cos(a), cos_b * torch.sin(lon_r), cos_lat * torch.sin(a)]


@register_encoding("spherem")
class SphereM(_MultiScale):
    """Sphere2Vec sphereM: multi-scale latitude mixed with single-scale longitude and vice versa."""

    columns_per_scale = 5

    def encode(self, lon: torch.Tensor, lat: torch.Tensor) -> torch.Tensor:
        a, b = self.scaled(lon), self.scaled(lat)
        return _per_scale(torch.sin(b), *_mixed_terms(lon, lat, a=a, b=b))


@register_encoding("spherem+")
@register_encoding("spheremplus")
class SphereMPlus(_MultiScale):
    """Sphere2Vec sphereM+: sphereM plus grid's sin/cos of each scaled angle."""

    columns_per_scale = 8

    def encode(self, lon: torch.Tensor, lat: torch.Tensor) -> torch.Tensor:
        a, b = self.scaled(lon), self.scaled(lat)
        return _per_scale(torch.sin(b), torch.cos(b), torch.sin(a), torch.cos(a), *_mixed_terms(lon, lat, a=a, b=b))
