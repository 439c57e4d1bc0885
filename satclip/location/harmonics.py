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

import ctypes
import math
from collections.abc import Callable
from functools import cache
from pathlib import Path

import numpy as np
import torch
from torch import nn

from ..geo import validate_lonlat
from .parts import run_in_parts
from .registry import register_encoding

try:  # optional fast CPU engine
    import sphericart as _sphericart
except ImportError:  # pragma: no cover - exercised only where sphericart is absent
    _sphericart = None

CONVENTIONS = ("satclip", "orthonormal", "closed-form")
ENGINES = ("auto", "torch", "sphericart")
_TORCH_CHUNK = 4096  # points per chunk for the torch recurrence on CPU (keeps a chunk's output in cache)
_BLOCK_FEATURES = 1 << 17  # features per sphericart block (1 MB of float64, one L2): in cache while it is scaled / cast
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


def _trig_row(lon_rad: torch.Tensor, L: int, *, convention: str) -> torch.Tensor:
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


def _harmonics_chunk(lonlat: torch.Tensor, L: int, *, convention: str, out: torch.Tensor) -> None:
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
    trig = _trig_row(lon, L, convention=convention)
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


@cache
def _sphericart_c() -> tuple[ctypes.CDLL | None, Callable[..., None]]:
    """sphericart's own OpenMP runtime (its wheel bundles a copy of libgomp, separate from torch's; None if
    not found) and its C function ``sphericart_spherical_harmonics_compute_array`` taking plain addresses:
    sphericart's Python wrapper spends ~4 us per call building ctypes pointers, ~2 ns per point at L = 10."""
    bundled = sorted((Path(_sphericart.__file__).parent.parent / "sphericart.libs").glob("libgomp*.so*"))
    library = ctypes.CDLL(_sphericart.SphericalHarmonics(0)._lib._name)
    compute = library.sphericart_spherical_harmonics_compute_array
    compute.argtypes = [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_size_t, ctypes.c_void_p, ctypes.c_size_t]
    compute.restype = None
    return (ctypes.CDLL(str(bundled[0])) if bundled else None), compute


def _sphericart_calculator(L: int) -> Callable[[np.ndarray, np.ndarray], None]:
    """``compute(xyz, out)``: sphericart's harmonics of degree < L of C-contiguous float64 (n, 3) ``xyz``
    into C-contiguous float64 (n, L*L) ``out``, on one OpenMP thread (parallelism is one Python thread
    per part of the rows, :mod:`satclip.location.parts`), for one call's blocks.

    The calculator is made for each call (7-11 us, against milliseconds per call) and used by this
    thread only: a calculator keeps scratch buffers sized for the OpenMP team of its creation, and
    calculators kept across calls corrupted the heap when commands with other thread settings ran
    in one process (locfit then probe in one test session). The team size of one, this thread's setting in
    sphericart's own runtime (which torch's ``set_num_threads`` does not reach), is set before it is made.
    """
    openmp, compute = _sphericart_c()
    if openmp is not None:
        openmp.omp_set_num_threads(1)
    calc = _sphericart.SphericalHarmonics(L - 1)
    handle = calc._calculator

    def run(xyz: np.ndarray, out: np.ndarray, *, calc=calc) -> None:  # calc: kept alive with its handle
        compute(handle, xyz.ctypes.data, xyz.size, out.ctypes.data, out.size)

    return run


def _unit_vectors(lonlat: torch.Tensor, convention: str) -> np.ndarray:
    """(n, 3) float64 unit vectors of (n, 2) float64 [lon, lat] degrees in the sphericart frame of ``convention``.

    theta = lat + 90 deg (from the south pole), phi = lon + 180 deg: (-cos(lat) cos(lon),
    -cos(lat) sin(lon), -sin(lat)); the Condon-Shortley phase (-1)^m equals a further half turn in
    phi: (cos(lat) cos(lon), cos(lat) sin(lon), -sin(lat)). Two trigonometric calls over the whole
    (n, 2) block (lon and lat together, dense), cos(lat) taken directly (exact next to the poles).
    """
    angles = lonlat.t().mul(-math.pi / 180.0)  # (2, n) view of negated radians: cos, and -sin, of lon and lat
    cos_a = torch.cos(angles)
    sin_a = angles.sin_()
    x, y = cos_a[0].mul_(cos_a[1]), sin_a[0].mul_(cos_a[1])  # cos(lat) cos(lon), -cos(lat) sin(lon)
    (x if convention != "closed-form" else y).neg_()
    return torch.stack([x, y, sin_a[1]], 1).numpy()


def _sphericart_fill(lonlat: torch.Tensor, L: int, *, convention: str, out: torch.Tensor) -> None:
    """Write the (n, L*L) features of CPU points into ``out`` (C-contiguous float64 or float32) with sphericart.

    sphericart gives the orthonormal real harmonics without Condon-Shortley phase of a unit vector;
    the conventions are reached through the vector (:func:`_unit_vectors`) and, for "satclip", the
    factor pi on the m = 0 columns. That factor (and a cast to float32, through a float64 scratch
    block) is applied ``_BLOCK_FEATURES`` features at a time, while the block is in cache. With
    several torch threads the rows are split into one contiguous part per thread, each run by a
    single-threaded calculator in its own Python thread (sphericart releases the GIL): one OpenMP
    region per block would stall on oversubscribed cores.
    """
    m0 = m0_columns(L) if convention == "satclip" else None
    target, n = out.numpy(), lonlat.shape[0]
    block = max(64, _BLOCK_FEATURES // (L * L))
    rows = n if (m0 is None and target.dtype == np.float64) else block  # nothing to do per block: one call

    def work(start: int, stop: int) -> None:
        _sphericart_rows(_unit_vectors(lonlat[start:stop], convention), L, m0=m0, target=target[start:stop], rows=rows)

    parts = min(torch.get_num_threads(), n // (2 * block))
    if parts < 2:
        work(0, n)
    else:
        run_in_parts(n, parts, work=work)


def _sphericart_rows(xyz: np.ndarray, L: int, *, m0: np.ndarray | None, target: np.ndarray, rows: int) -> None:
    """sphericart on one thread over ``rows``-row blocks of ``xyz`` into ``target``, the columns ``m0``
    (None: none) of each block then multiplied by pi and the block cast while in cache."""
    compute = _sphericart_calculator(L)
    scratch = None if target.dtype == np.float64 else np.empty((min(rows, len(xyz)), L * L))
    for start in range(0, len(xyz), rows):
        block = target[start : start + rows]
        values = block if scratch is None else scratch[: len(block)]
        compute(xyz[start : start + rows], values)
        if m0 is not None:
            values[:, m0] *= math.pi  # one gather, multiply and scatter: ~10x fewer calls than column by column
        if values is not block:
            np.copyto(block, values)


def _engine_for(device: torch.device, engine: str) -> str:
    if engine not in ENGINES:
        raise ValueError(f"engine must be one of {ENGINES}, got {engine!r}")
    if engine == "auto":
        return "sphericart" if (_sphericart is not None and device.type == "cpu") else "torch"
    if engine == "sphericart" and (_sphericart is None or device.type != "cpu"):
        raise ValueError("engine='sphericart' needs the sphericart package and CPU tensors")
    return engine


def fill_harmonics(lonlat: torch.Tensor, L: int, *, convention: str, engine: str, out: torch.Tensor) -> None:
    """Write the features of already validated (n, 2) float64 points into a C-contiguous float64 or float32
    ``out`` on their device (``engine`` as in :func:`spherical_harmonics`): for callers that validated once."""
    engine = _engine_for(lonlat.device, engine)
    if _fills_directly(out, engine):
        _engine_fill(lonlat, L, convention=convention, engine=engine, out=out)
    else:
        buffer = torch.empty(out.shape, dtype=torch.float64, device=out.device)
        _engine_fill(lonlat, L, convention=convention, engine=engine, out=buffer)
        out.copy_(buffer)


def _fills_directly(out: torch.Tensor, engine: str) -> bool:
    """Whether an engine writes ``out`` itself: C-contiguous float64, or float32 on CPU for sphericart (cast block by block)."""
    return out.is_contiguous() and (out.dtype == torch.float64 or (out.dtype == torch.float32 and engine == "sphericart"))


def _engine_fill(lonlat: torch.Tensor, L: int, *, convention: str, engine: str, out: torch.Tensor) -> None:
    """Write the features into an ``out`` on the points' device that :func:`_fills_directly` accepts."""
    if engine == "sphericart":
        _sphericart_fill(lonlat, L, convention=convention, out=out)
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
        _harmonics_chunk(lonlat[start : start + step], L, convention=convention, out=out[start : start + step])


def empty_output(n: int, columns: int, *, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """An uninitialised output; on CPU through numpy, which asks the kernel for huge pages (faster first touch)."""
    if device.type == "cpu" and dtype in (torch.float32, torch.float64):
        return torch.from_numpy(np.empty((n, columns), dtype=np.float64 if dtype == torch.float64 else np.float32))
    return torch.empty(n, columns, dtype=dtype, device=device)


def spherical_harmonics(
    lonlat: torch.Tensor,
    legendre_polys: int,
    *,
    convention: str = "satclip",
    dtype: torch.dtype | None = None,
    out: torch.Tensor | None = None,
    engine: str = "auto",
) -> torch.Tensor:
    """Real spherical harmonics of degree 0..legendre_polys-1 for (N, 2) [lon, lat] degrees.

    Returns (N, L*L), computed in float64 whatever the input and cast to ``dtype`` (default float64,
    or ``out.dtype``). ``out`` may be a preallocated (N, L*L) tensor to fill, e.g. a memory map: a
    C-contiguous float64 one (or float32 one, with the sphericart engine) is written directly, any
    other in chunks through a float64 buffer of at most ~128 MB. ``engine``: "auto" (sphericart on CPU when installed, else torch), "torch" or
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
        out = empty_output(n, L * L, dtype=dtype or torch.float64, device=lonlat.device)
    elif out.shape != (n, L * L):
        raise ValueError(f"out must have shape {(n, L * L)}, got {tuple(out.shape)}")
    with torch.no_grad():
        if _fills_directly(out, engine) and out.device == lonlat.device:
            _engine_fill(lonlat, L, convention=convention, engine=engine, out=out)
            return out
        step = max(1, _CHUNK_ELEMENTS // (L * L))
        buffer = torch.empty(min(step, n), L * L, dtype=torch.float64, device=lonlat.device)
        for start in range(0, n, step):
            part = buffer[: min(step, n - start)]
            _engine_fill(lonlat[start : start + step], L, convention=convention, engine=engine, out=part)
            out[start : start + step].copy_(part)
    return out


@register_encoding("sphericalharmonics")
class SphericalHarmonics(nn.Module):
    """Positional encoding: (N, 2) [lon, lat] degrees -> (N, L*L) real spherical harmonics.

    ``convention`` is one of "satclip" (released checkpoints), "orthonormal", "closed-form".
    The output follows the input dtype for floating inputs of float32/float64; the computation is
    always float64 (float32 recurrences lose precision at high degree).
    """

    def __init__(self, legendre_polys: int = 10, convention: str = "satclip", *, engine: str = "auto") -> None:
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
        return spherical_harmonics(lonlat, self.legendre_polys, convention=self.convention, dtype=dtype, engine=self.engine)

    def extra_repr(self) -> str:
        return f"legendre_polys={self.legendre_polys}, convention={self.convention!r}"


def graph_spherical_harmonics(lonlat: torch.Tensor, legendre_polys: int, *, convention: str) -> torch.Tensor:
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
    trig = _trig_row(lon, L, convention=convention)
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
