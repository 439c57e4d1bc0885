"""The inference path of a spherical-harmonics SIREN tower on CPU, in cache-sized chunks of rows.

Why: embedding coordinates is bound by the tower's matrix products, and the plain path (harmonics
of the whole batch, then one layer at a time) adds full-size passes over intermediate arrays that
no longer fit the cache (a cast, the bias, the factor w0, the sine). Here the rows are taken
``CHUNK_ROWS`` at a time: the chunk's harmonics (computed in float64, in the tower's dtype), then each
layer's matrix product with its bias in one call (``addmm``), then w0 and the sine in place; the
last layer writes straight into the output. The satclip convention's factor pi on the m = 0
harmonics is folded into the first layer's weights once per call. With several torch threads each
thread takes a contiguous part of the rows through that single-threaded pipeline. The numbers are
the plain path's (float64 within 1e-12; float32 within 1e-6 of float64), tested in
tests/test_encoder.py.

The float64 sine is the largest cost after the products (about a fifth of them at L = 10).
``SATCLIP_TORCH_COMPILE=1`` fuses w0 and the sine into one ``torch.compile``\ d kernel (needs a C++
compiler; the first call compiles for ~20 s); it is off by default. See docs/speed.md.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable

import numpy as np
import torch

from .harmonics import SphericalHarmonics, empty_output, fill_harmonics, m0_columns
from .networks import SirenNet
from .parts import run_in_parts

CHUNK_ROWS = 512  # rows per chunk: a chunk's float64 hidden layer (512 x 512) is 2 MB, one core's L2 here
COMPILE_ENV = "SATCLIP_TORCH_COMPILE"

_compiled: dict[str, Callable[[torch.Tensor, float], torch.Tensor]] = {}


def applies(posenc: torch.nn.Module, nnet: torch.nn.Module, *, lonlat: torch.Tensor) -> bool:
    """Whether :func:`siren_harmonics_forward` computes this call: a spherical-harmonics SIREN in eval
    mode on CPU, float32/float64, without gradients (inference), (N, 2) coordinates."""
    if not (isinstance(posenc, SphericalHarmonics) and isinstance(nnet, SirenNet)) or nnet.training:
        return False
    if torch.is_grad_enabled() or lonlat.device.type != "cpu" or lonlat.ndim != 2 or lonlat.shape[1] != 2:
        return False
    params = list(nnet.parameters())
    return all(p.device.type == "cpu" and p.dtype == params[0].dtype for p in params) and params[0].dtype in (torch.float32, torch.float64)


def _compiled_sine() -> Callable[[torch.Tensor, float], torch.Tensor] | None:
    """The compiled w0-and-sine when ``SATCLIP_TORCH_COMPILE=1``, else None; compiled on first use, in the
    calling thread (before any worker thread calls it)."""
    if os.environ.get(COMPILE_ENV, "0") in ("", "0"):
        return None
    if "sine" not in _compiled:

        def sine_(h: torch.Tensor, w0: float) -> torch.Tensor:
            return h.copy_(torch.sin(h * w0))

        compiled = torch.compile(sine_, dynamic=True)
        compiled(torch.zeros(3, 2), 1.0)
        compiled(torch.zeros(3, 2, dtype=torch.float64), 1.0)
        _compiled["sine"] = compiled
    return _compiled["sine"]


def _sine_(h: torch.Tensor, w0: float, *, compiled: Callable[[torch.Tensor, float], torch.Tensor] | None) -> None:
    """h <- sin(w0 h) in place (the plain path's ``torch.sin(w0 * h)``)."""
    if compiled is not None:
        compiled(h, w0)
        return
    if w0 != 1.0:
        h.mul_(w0)
    if h.dtype == torch.float32 and torch.get_num_threads() == 1:
        view = h.numpy()  # numpy's vectorised float32 sine is ~2x torch's on one thread
        np.sin(view, out=view)
    else:
        h.sin_()


def siren_harmonics_forward(posenc: SphericalHarmonics, nnet: SirenNet, *, lonlat: torch.Tensor, chunk_rows: int | None = None) -> torch.Tensor:
    """(N, 2) validated [lon, lat] degrees -> (N, output_dim) in the network's dtype, chunk by chunk.

    With several torch threads the rows are split into one contiguous part per thread, and each part
    runs the single-threaded chunk pipeline in its own Python thread (the products and the sine release
    the GIL): each core keeps its chunk in its own cache and no operation waits at a barrier for another
    core (many short OpenMP regions stall badly when the cores are oversubscribed, see docs/speed.md)."""
    rows = chunk_rows or CHUNK_ROWS
    layers = [*nnet.layers, nnet.last_layer]
    weights = [layer.weight.detach().t() for layer in layers]
    biases = [layer.bias.detach() for layer in layers]
    w0s = [float(layer.w0) for layer in layers[:-1]]
    dtype, L, n, convention = weights[0].dtype, posenc.legendre_polys, lonlat.shape[0], posenc.convention
    if convention == "satclip" and n >= rows:
        # The convention's factor pi on the m = 0 columns, folded into those rows of the first layer once
        # per call: the orthonormal harmonics then need no strided pass over every chunk (a third of
        # the harmonics' time at L = 40). Same products up to rounding (float64 within 1e-12).
        weights[0] = weights[0].clone()
        weights[0][m0_columns(L)] *= math.pi
        convention = "orthonormal"
    lonlat = lonlat.to(torch.float64)
    out = empty_output(n, weights[-1].shape[1], dtype=dtype, device=lonlat.device)
    compiled = _compiled_sine()
    threads = torch.get_num_threads()
    parts = min(threads, n // (2 * rows))
    if parts < 2:
        _forward_rows(
            weights,
            biases,
            w0s=w0s,
            out=out,
            chunk_rows=rows,
            compiled=compiled,
            features=_chunk_features(posenc, convention, lonlat=lonlat, dtype=dtype, rows=rows),
        )
        return out

    def work(start: int, stop: int) -> None:
        features = _chunk_features(posenc, convention, lonlat=lonlat[start:stop], dtype=dtype, rows=rows)
        _forward_rows(weights, biases, w0s=w0s, out=out[start:stop], chunk_rows=rows, compiled=compiled, features=features)

    run_in_parts(n, parts, work=work)
    return out


def _chunk_features(posenc: SphericalHarmonics, convention: str, *, lonlat: torch.Tensor, dtype: torch.dtype, rows: int) -> Callable[[int, int], torch.Tensor]:
    """``features(start, stop)``: the harmonics of those rows of ``lonlat`` (computed in float64, in ``convention``)
    in ``dtype``, written into a buffer of ``rows`` rows that every chunk reuses (sphericart casts while in cache)."""
    L = posenc.legendre_polys
    feats = torch.empty(min(rows, max(lonlat.shape[0], 1)), L * L, dtype=dtype)

    def features(start: int, stop: int) -> torch.Tensor:
        fill_harmonics(lonlat[start:stop], L, convention=convention, engine=posenc.engine, out=feats[: stop - start])
        return feats[: stop - start]

    return features


def _forward_rows(
    weights: list[torch.Tensor],
    biases: list[torch.Tensor],
    *,
    w0s: list[float],
    out: torch.Tensor,
    chunk_rows: int,
    compiled: Callable[[torch.Tensor, float], torch.Tensor] | None,
    features: Callable[[int, int], torch.Tensor],
) -> None:
    """The network over ``out``'s rows, ``chunk_rows`` at a time; ``features(start, stop)`` gives a chunk's
    input in the network's dtype."""
    n = out.shape[0]
    rows = min(chunk_rows, max(n, 1))
    hidden = [torch.empty(rows, w.shape[1], dtype=w.dtype) for w in weights[:-1]]
    for start in range(0, n, rows):
        stop = min(start + rows, n)
        x = features(start, stop)
        for w, b, w0, h in zip(weights, biases, w0s, hidden):
            h = h[: stop - start]
            torch.addmm(b, x, w, out=h)
            _sine_(h, w0, compiled=compiled)
            x = h
        torch.addmm(biases[-1], x, weights[-1], out=out[start:stop])
