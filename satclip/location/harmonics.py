"""Real spherical harmonics of (lon, lat) in degrees, exact to float64 precision at any degree.

Conventions (column ``l*l + l + m``, l = 0..L-1, m = -l..l; theta = radians(lat + 90) measured from
the south pole, phi = radians(lon + 180)):

- ``"satclip"``: the functions of the released SatCLIP checkpoints: sqrt(2) K P_l^|m| cos(m phi)
  for m > 0, sqrt(2) K P_l^|m| sin(|m| phi) for m < 0, and *pi* K P_l^0 for m = 0 (a slip in the
  reference generator that the released weights were trained with); no Condon-Shortley phase.
- ``"orthonormal"``: the same without the pi: an orthonormal basis of the sphere.
- ``"closed-form"``: the reference's other path: orthonormal with the Condon-Shortley phase.

Two engines compute the same numbers (both tested against high-precision values to 1e-10 at L=40):

- on CPU, ``sphericart`` (when installed): a fast C++ implementation of the orthonormal real
  harmonics of a unit vector. The conventions above are reached through the input vector alone
  (phi = lon + 180 degrees; the Condon-Shortley phase is a further half turn in phi) plus the factor
  pi on the L columns with m = 0;
- everywhere else (GPU, or without sphericart): a torch implementation of the standard stable
  three-term recurrence on fully normalised associated Legendre functions (no factorials, no
  cancellation), with sin(theta) = cos(lat) taken directly so points next to the poles keep full
  precision. The recurrence runs directly on the output columns (the trigonometric factor of m
  commutes with the recurrence in l), one degree's 2l+1 columns at a time.
"""

from __future__ import annotations

import math
import threading
from functools import cache

import numpy as np
import torch
from torch import nn

from ..geo import validate_lonlat
from .registry import register_encoding

try:  # optional fast CPU engine
    import sphericart as _sphericart
except ImportError:  # pragma: no cover - exercised only where sphericart is absent
    _sphericart = None

CONVENTIONS = ("satclip", "orthonormal", "closed-form")
ENGINES = ("auto", "torch", "sphericart")
_TORCH_CHUNK = 4096  # points per chunk for the torch recurrence on CPU (keeps a chunk's output in cache)
_SPHERICART_BLOCK = 1 << 19  # features per sphericart call (4 MB) when the m = 0 columns need the factor pi
_CHUNK_ELEMENTS = 1 << 24  # features per float64 buffer (128 MB) when the output is not C-contiguous float64


@cache
def _coefficients(L: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Recurrence coefficients on the mirrored index m = -(L-1)..L-1, one row per degree l.

    ``a[l], b[l]``: P_l^m = a (x P_{l-1}^m - b P_{l-2}^m) for |m| <= l-1 (b = 0 at |m| = l-1);
    ``d[l]``: the diagonal step P_l^l = d s P_{l-1}^{l-1}.
    """
    a = torch.zeros(L, 2 * L - 1, dtype=torch.float64)
    b = torch.zeros(L, 2 * L - 1, dtype=torch.float64)
    d = torch.zeros(L, dtype=torch.float64)
    for l in range(1, L):
        d[l] = math.sqrt((2 * l + 1) / (2 * l))
        for m in range(0, l):
            am = math.sqrt((4 * l * l - 1) / (l * l - m * m))
            bm = math.sqrt(((l - 1) ** 2 - m * m) / (4 * (l - 1) ** 2 - 1)) if l - 1 > m else 0.0
            for c in {L - 1 + m, L - 1 - m}:
                a[l, c], b[l, c] = am, bm
    return a, b, d


def _trig_row(lon_rad: torch.Tensor, L: int, convention: str) -> torch.Tensor:
    """(n, 2L-1) mirrored row: sqrt(2) sin(|m| phi) for m < 0, c0 for m = 0, sqrt(2) cos(m phi) for m > 0."""
    m = torch.arange(1, L, dtype=torch.float64, device=lon_rad.device)
    # phi = lon + pi; the Condon-Shortley phase (-1)^m is the same as a further shift by pi.
    phi = lon_rad if convention == "closed-form" else lon_rad + math.pi
    angles = phi[:, None] * m
    c0 = math.pi if convention == "satclip" else 1.0
    return torch.cat(
        [
            math.sqrt(2) * torch.sin(angles).flip(1),
            torch.full_like(phi[:, None], c0),
            math.sqrt(2) * torch.cos(angles),
        ],
        dim=1,
    )


def _harmonics_chunk(lonlat: torch.Tensor, L: int, convention: str, out: torch.Tensor) -> None:
    """Write the (n, L*L) float64 features of an (n, 2) float64 chunk into ``out`` (float64, rows may be strided).

    The recurrence runs on the features themselves, in ``out``: at fixed m the three-term recurrence
    in l has point-independent coefficients, so it commutes with the factor trig(m, phi). Only the
    diagonal columns |m| = l are seeded from P_l^l times trig; degree l's block (columns
    l*l .. l*l + 2l) then takes three operations on the blocks of degrees l-1 and l-2.
    """
    a, b, d = (t.to(lonlat.device) for t in _coefficients(L))
    lon, lat = torch.deg2rad(lonlat).unbind(1)
    x = (-torch.sin(lat))[:, None]  # cos(theta), theta from the south pole
    s = torch.cos(lat)  # sin(theta) >= 0, exact next to the poles
    trig = _trig_row(lon, L, convention)
    c = L - 1
    diag = torch.full_like(s, 1.0 / math.sqrt(4 * math.pi))  # P_l^l, fully normalised
    torch.mul(diag, trig[:, c], out=out[:, 0])
    for l in range(1, L):
        row, prev1, prev2 = l * l, (l - 1) * (l - 1), (l - 2) * (l - 2)
        inner = out[:, row + 1 : row + 2 * l]  # |m| <= l-1
        torch.mul(out[:, prev1:row], x, out=inner)
        if l >= 2:  # |m| <= l-2: subtract b * degree l-2
            out[:, row + 2 : row + 2 * l - 1].addcmul_(out[:, prev2:prev1], b[l, c - l + 2 : c + l - 1], value=-1.0)
        inner.mul_(a[l, c - l + 1 : c + l])
        diag = diag * s * d[l]
        torch.mul(diag, trig[:, c - l], out=out[:, row])
        torch.mul(diag, trig[:, c + l], out=out[:, row + 2 * l])


def m0_columns(L: int) -> np.ndarray:
    """The columns l*l + l of the m = 0 harmonics, l = 0..L-1: those the satclip convention scales by pi."""
    return np.arange(L) * (np.arange(L) + 1)


_calculators = threading.local()  # sphericart calculators keep scratch buffers: one per thread and L


def _sphericart_calculator(L: int):
    """This thread's sphericart calculator for degree < L (a calculator is not safe to share between threads)."""
    mine = _calculators.__dict__.setdefault("by_degree", {})
    if L not in mine:
        mine[L] = _sphericart.SphericalHarmonics(L - 1)
    return mine[L]


def _sphericart_fill(lonlat: torch.Tensor, L: int, convention: str, out: torch.Tensor) -> None:
    """Write the (n, L*L) features of CPU points into ``out`` (C-contiguous float64) with sphericart.

    sphericart gives the orthonormal real harmonics without Condon-Shortley phase of a unit vector.
    """
    # Unit vector at theta = lat + 90 deg (from the south pole), phi = lon + 180 deg:
    # (sign cos(lat) cos(lon), sign cos(lat) sin(lon), -sin(lat)) with sign = -1; the
    # Condon-Shortley phase (-1)^m equals a further half turn in phi, i.e. sign = +1.
    sign = 1.0 if convention == "closed-form" else -1.0
    angles = lonlat * (-math.pi / 180.0)  # negated radians: two trig calls give cos and -sin of both
    cos_a, sin_a = torch.cos(angles), torch.sin(angles)
    xyz = torch.empty(lonlat.shape[0], 3, dtype=torch.float64)
    torch.mul(cos_a[:, 1], cos_a[:, 0], out=xyz[:, 0]).mul_(sign)
    torch.mul(cos_a[:, 1], sin_a[:, 0], out=xyz[:, 1]).mul_(-sign)
    xyz[:, 2] = sin_a[:, 1]
    points = xyz.numpy()
    calc, target = _sphericart_calculator(L), out.numpy()
    fill = getattr(calc, "_compute_numpy", None)  # writes into a given array: no second copy of the output

    def compute(rows: slice) -> None:
        if fill is None:  # pragma: no cover - sphericart versions without it
            target[rows] = calc.compute(points[rows])
        else:
            fill(points[rows], target[rows], None, None)

    if convention != "satclip":
        compute(slice(None))
        return
    m0 = m0_columns(L)
    if getattr(calc, "_omp_num_threads", 2) > 1:
        # One call, i.e. one OpenMP parallel region: many short regions stall badly when the cores
        # are oversubscribed (other processes, data-loader workers). Then pi on the m = 0 columns.
        compute(slice(None))
        for column in m0:
            target[:, column] *= math.pi
        return
    # Single-threaded: the factor pi is applied block by block while the block is still in cache.
    step = max(64, _SPHERICART_BLOCK // (L * L))
    for start in range(0, points.shape[0], step):
        rows = slice(start, start + step)
        compute(rows)
        block = target[rows]
        for column in m0:
            block[:, column] *= math.pi


def _engine_for(device: torch.device, engine: str) -> str:
    if engine not in ENGINES:
        raise ValueError(f"engine must be one of {ENGINES}, got {engine!r}")
    if engine == "auto":
        return "sphericart" if (_sphericart is not None and device.type == "cpu") else "torch"
    if engine == "sphericart" and (_sphericart is None or device.type != "cpu"):
        raise ValueError("engine='sphericart' needs the sphericart package and CPU tensors")
    return engine


def fill_harmonics(lonlat: torch.Tensor, L: int, convention: str, engine: str, out: torch.Tensor) -> None:
    """Write the float64 features of already validated (n, 2) float64 points into a C-contiguous float64
    ``out`` on their device (``engine`` as in :func:`spherical_harmonics`): for callers that validated once."""
    _engine_fill(lonlat, L, convention, _engine_for(lonlat.device, engine), out)


def _engine_fill(lonlat: torch.Tensor, L: int, convention: str, engine: str, out: torch.Tensor) -> None:
    """Write float64 features into a C-contiguous float64 ``out`` on the points' device."""
    if engine == "sphericart":
        _sphericart_fill(lonlat, L, convention, out)
        return
    # On CPU, chunks keep a chunk's output in cache; with several threads, fewer and larger chunks
    # (every operation is a parallel region, and many short ones stall on oversubscribed cores).
    if lonlat.device.type != "cpu":
        step = max(lonlat.shape[0], 1)
    elif torch.get_num_threads() == 1:
        step = _TORCH_CHUNK
    else:
        step = max(_TORCH_CHUNK, _CHUNK_ELEMENTS // (2 * L))
    for start in range(0, lonlat.shape[0], step):
        _harmonics_chunk(lonlat[start : start + step], L, convention, out[start : start + step])


def empty_output(n: int, columns: int, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """An uninitialised output; on CPU through numpy, which asks the kernel for huge pages (faster first touch)."""
    if device.type == "cpu" and dtype in (torch.float32, torch.float64):
        return torch.from_numpy(np.empty((n, columns), dtype=np.float64 if dtype == torch.float64 else np.float32))
    return torch.empty(n, columns, dtype=dtype, device=device)


def spherical_harmonics(
    lonlat: torch.Tensor,
    legendre_polys: int,
    convention: str = "satclip",
    dtype: torch.dtype | None = None,
    out: torch.Tensor | None = None,
    engine: str = "auto",
) -> torch.Tensor:
    """Real spherical harmonics of degree 0..legendre_polys-1 for (N, 2) [lon, lat] degrees.

    Returns (N, L*L), computed in float64 whatever the input and cast to ``dtype`` (default float64,
    or ``out.dtype``). ``out`` may be a preallocated (N, L*L) tensor to fill, e.g. a memory map: a
    C-contiguous float64 one is written directly, any other in chunks through a float64 buffer of at
    most ~128 MB. ``engine``: "auto" (sphericart on CPU when installed, else torch), "torch" or
    "sphericart". Not differentiable in the coordinates.
    """
    if convention not in CONVENTIONS:
        raise ValueError(f"convention must be one of {CONVENTIONS}, got {convention!r}")
    L = int(legendre_polys)
    if L < 1:
        raise ValueError(f"legendre_polys must be >= 1, got {legendre_polys!r}")
    lonlat = validate_lonlat(lonlat).to(torch.float64)
    engine = _engine_for(lonlat.device, engine)
    n = lonlat.shape[0]
    if out is None:
        out = empty_output(n, L * L, dtype or torch.float64, lonlat.device)
    elif out.shape != (n, L * L):
        raise ValueError(f"out must have shape {(n, L * L)}, got {tuple(out.shape)}")
    with torch.no_grad():
        if out.dtype == torch.float64 and out.is_contiguous() and out.device == lonlat.device:
            _engine_fill(lonlat, L, convention, engine, out)
            return out
        step = max(1, _CHUNK_ELEMENTS // (L * L))
        buffer = torch.empty(min(step, n), L * L, dtype=torch.float64, device=lonlat.device)
        for start in range(0, n, step):
            part = buffer[: min(step, n - start)]
            _engine_fill(lonlat[start : start + step], L, convention, engine, part)
            out[start : start + step].copy_(part)
    return out


@register_encoding("sphericalharmonics")
class SphericalHarmonics(nn.Module):
    """Positional encoding: (N, 2) [lon, lat] degrees -> (N, L*L) real spherical harmonics.

    ``convention`` is one of "satclip" (released checkpoints), "orthonormal", "closed-form".
    The output follows the input dtype for floating inputs of float32/float64; the computation is
    always float64 (float32 recurrences lose precision at high degree).
    """

    def __init__(self, legendre_polys: int = 10, convention: str = "satclip", engine: str = "auto") -> None:
        super().__init__()
        if convention not in CONVENTIONS:
            raise ValueError(f"convention must be one of {CONVENTIONS}, got {convention!r}")
        self.legendre_polys = int(legendre_polys)
        self.convention = convention
        self.engine = engine

    @property
    def output_dim(self) -> int:
        return self.legendre_polys**2

    def forward(self, lonlat: torch.Tensor) -> torch.Tensor:
        dtype = lonlat.dtype if lonlat.dtype in (torch.float32, torch.float64) else torch.float64
        return spherical_harmonics(lonlat, self.legendre_polys, self.convention, dtype=dtype, engine=self.engine)

    def extra_repr(self) -> str:
        return f"legendre_polys={self.legendre_polys}, convention={self.convention!r}"


def graph_spherical_harmonics(lonlat: torch.Tensor, legendre_polys: int, convention: str) -> torch.Tensor:
    """(N, 2) float64 [lon, lat] degrees -> (N, L*L) float64 harmonics, written for tracing.

    The same stable recurrence as :func:`spherical_harmonics` (same coefficients, same order of
    operations) but functional, for the TorchScript and ONNX exports (``satclip.io.export``): degree l's row (m = -l..l) is built from the two previous rows by
    concatenation, so TorchScript tracing and ONNX export see a plain dataflow graph.
    """
    L = int(legendre_polys)
    a, b, d = _coefficients(L)
    c = L - 1
    lon = lonlat[:, 0] * (math.pi / 180.0)
    lat = lonlat[:, 1] * (math.pi / 180.0)
    x = (-torch.sin(lat))[:, None]  # cos(theta), theta from the south pole
    s = torch.cos(lat)[:, None]  # sin(theta), exact next to the poles
    trig = _trig_row(lon, L, convention)
    prev2: torch.Tensor | None = None
    prev1 = torch.full_like(x, 1.0 / math.sqrt(4 * math.pi))
    columns = [prev1 * trig[:, c : c + 1]]
    for l in range(1, L):
        window = slice(c - (l - 1), c + l)  # |m| <= l-1
        a_l, b_l = a[l, window].to(lonlat.device), b[l, window].to(lonlat.device)
        inner = prev1 * x
        if prev2 is not None:  # b = 0 at l = 1
            inner = inner - nn.functional.pad(prev2, (1, 1)) * b_l
        inner = inner * a_l
        diag = d[l].to(lonlat.device) * s
        cur = torch.cat([diag * prev1[:, :1], inner, diag * prev1[:, -1:]], dim=1)
        columns.append(cur * trig[:, c - l : c + l + 1])
        prev2, prev1 = prev1, cur
    return torch.cat(columns, dim=1)
