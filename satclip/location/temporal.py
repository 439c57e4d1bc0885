"""A time-aware positional encoding: spherical harmonics of the place times Fourier terms of the season.

Input (N, 3) [lon, lat, t]: degrees and the acquisition time in Unix seconds UTC, NaN where unknown
(:mod:`satclip.acqtime`). With Y(x) the L*L real spherical harmonics of the place
(:mod:`.harmonics`, degrees 0..L-1) and phi = ``year_phase(t)`` the fraction of the year, the
features are the outer product

    Y(x) (x) [1, cos 2 pi phi, sin 2 pi phi, ..., cos 2 pi K phi, sin 2 pi K phi (, tau)]

(columns: the L*L static harmonics first, then for each harmonic its 2K (+1) temporal products, in
that order), so a linear read-out is any sum_k a_k(x) cos 2 pi k phi + b_k(x) sin 2 pi k phi +
c(x): a seasonal cycle whose amplitude and phase depend on the place, e.g. a summer in the north
that is a winter in the south (b_1(x) ~ sign(lat)). A concatenation [Y(x), Fourier(t)] cannot
express that linearly: its read-out is f(x) + g(t), one season for the whole globe. ``year_trend``
adds tau = (decimal year - 2020) / 10 as one more temporal term (a slow, place-dependent trend).

Unknown time: the temporal terms are zero, so the features are the static harmonics padded with
zeros: a time-aware tower answers time-free queries with its own notion of "any season".
``time_dropout`` (training mode only) sets the time of that fraction of rows to unknown, so the
tower is also trained to answer such queries (the embedding of the place averaged over the season,
under a contrastive or squared loss).
"""

from __future__ import annotations

import math

import torch
from torch import nn

from ..acqtime import decimal_year, year_phase
from ..geo import validate_lonlat
from .encodings import integer_hparam
from .harmonics import CONVENTIONS, spherical_harmonics
from .registry import register_encoding

TREND_ORIGIN = 2020.0
TREND_SPAN_YEARS = 10.0


def temporal_terms(t: torch.Tensor, time_harmonics: int, *, year_trend: bool = False) -> torch.Tensor:
    """(N,) float64 Unix seconds -> (N, 2K (+1)) [cos 2 pi k phi, sin 2 pi k phi for k = 1..K (, tau)];
    rows with NaN time are zero. Pure tensor operations (traceable for TorchScript / ONNX)."""
    k = torch.arange(1, time_harmonics + 1, dtype=torch.float64, device=t.device)
    angles = (2.0 * math.pi) * year_phase(t)[:, None] * k
    terms = torch.stack([torch.cos(angles), torch.sin(angles)], dim=2).flatten(1)
    if year_trend:
        terms = torch.cat([terms, ((decimal_year(t) - TREND_ORIGIN) / TREND_SPAN_YEARS)[:, None]], dim=1)
    return torch.where(torch.isnan(terms), torch.zeros_like(terms), terms)


def space_time_product(harmonics: torch.Tensor, terms: torch.Tensor) -> torch.Tensor:
    """(N, H) static features and (N, T) temporal terms -> (N, H (1 + T)): [static, static (x) terms]."""
    return torch.cat([harmonics, (harmonics[:, :, None] * terms[:, None, :]).flatten(1)], dim=1)


@register_encoding("sphericalharmonics_time")
class SphericalHarmonicsTime(nn.Module):
    """Positional encoding: (N, 3) [lon, lat, t] -> (N, L*L (1 + 2K (+1))) space-time products (module docstring).

    ``legendre_polys`` L and ``convention`` as for ``sphericalharmonics``; ``time_harmonics`` K
    seasonal Fourier orders (>= 1); ``year_trend`` adds the slow trend term; ``time_dropout`` the
    fraction of rows whose time is set to unknown in training mode.
    """

    takes_time = True

    def __init__(
        self,
        legendre_polys: int = 10,
        time_harmonics: int = 2,
        *,
        year_trend: bool = False,
        time_dropout: float = 0.1,
        convention: str = "satclip",
        engine: str = "auto",
    ) -> None:
        super().__init__()
        if convention not in CONVENTIONS:
            raise ValueError(f"convention must be one of {CONVENTIONS}, got {convention!r}")
        if not 0.0 <= float(time_dropout) < 1.0:
            raise ValueError(f"time_dropout must be in [0, 1), got {time_dropout!r}")
        self.legendre_polys = integer_hparam("legendre_polys", legendre_polys)
        self.time_harmonics = integer_hparam("time_harmonics", time_harmonics)
        self.year_trend = bool(year_trend)
        self.time_dropout = float(time_dropout)
        self.convention = convention
        self.engine = engine

    @property
    def output_dim(self) -> int:
        return self.legendre_polys**2 * (1 + 2 * self.time_harmonics + int(self.year_trend))

    def forward(self, lonlat_time: torch.Tensor) -> torch.Tensor:
        dtype = lonlat_time.dtype if lonlat_time.dtype in (torch.float32, torch.float64) else torch.float64
        x = validate_lonlat(lonlat_time, "lonlat_time", with_time=True).to(torch.float64)
        t = x[:, 2]
        if self.training and self.time_dropout > 0:
            unknown = torch.rand(t.shape[0], device=t.device) < self.time_dropout
            t = torch.where(unknown, torch.full_like(t, math.nan), t)
        harmonics = spherical_harmonics(x[:, :2], self.legendre_polys, convention=self.convention, engine=self.engine)
        return space_time_product(harmonics, temporal_terms(t, self.time_harmonics, year_trend=self.year_trend)).to(dtype)

    def extra_repr(self) -> str:
        return (
            f"legendre_polys={self.legendre_polys}, time_harmonics={self.time_harmonics}, year_trend={self.year_trend}, "
            f"time_dropout={self.time_dropout}, convention={self.convention!r}"
        )


__all__ = ["SphericalHarmonicsTime", "space_time_product", "temporal_terms"]
