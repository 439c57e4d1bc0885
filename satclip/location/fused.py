"""The inference path of a spherical-harmonics SIREN tower on CPU, in cache-sized chunks of rows.

Why: embedding coordinates is bound by the tower's matrix products, and the plain path (harmonics
of the whole batch, then one layer at a time) adds full-size passes over intermediate arrays that
no longer fit the cache (a cast, the bias, the factor w0, the sine). Here the rows are taken
``CHUNK_ROWS`` at a time: the chunk's harmonics (float64, cast to the tower's dtype), then each
layer's matrix product with its bias in one call (``addmm``), then w0 and the sine in place; the
last layer writes straight into the output. The numbers are the plain path's (float64 within
1e-12; float32 within 1e-6 of float64), tested in tests/test_encoder.py.

The sine is the largest cost after the products (a float64 sine costs about as much as 15 of the
tower's multiply-adds per element). ``SATCLIP_TORCH_COMPILE=1`` fuses w0 and the sine into one
``torch.compile``\\ d kernel (needs a C++ compiler; the first call compiles for ~20 s); it is off by
default. See docs/speed.md for the measurements.
"""

from __future__ import annotations

import os
from collections.abc import Callable

import numpy as np
import torch

from .harmonics import SphericalHarmonics, empty_output, fill_harmonics
from .networks import SirenNet

CHUNK_ROWS = 256  # rows per chunk: a chunk's float64 hidden layer (256 x 512) is 1 MB, one core's L2
COMPILE_ENV = "SATCLIP_TORCH_COMPILE"

_compiled: dict[str, Callable[[torch.Tensor, float], torch.Tensor]] = {}


def applies(posenc: torch.nn.Module, nnet: torch.nn.Module, lonlat: torch.Tensor) -> bool:
    """Whether :func:`siren_harmonics_forward` computes this call: a spherical-harmonics SIREN in eval
    mode on CPU, float32/float64, without gradients (inference), (N, 2) coordinates."""
    if not (isinstance(posenc, SphericalHarmonics) and isinstance(nnet, SirenNet)) or nnet.training:
        return False
    if torch.is_grad_enabled() or lonlat.device.type != "cpu" or lonlat.ndim != 2 or lonlat.shape[1] != 2:
        return False
    params = list(nnet.parameters())
    return all(p.device.type == "cpu" and p.dtype == params[0].dtype for p in params) and params[0].dtype in (torch.float32, torch.float64)


def _compiled_sine() -> Callable[[torch.Tensor, float], torch.Tensor] | None:
    if os.environ.get(COMPILE_ENV, "0") in ("", "0"):
        return None
    if "sine" not in _compiled:

        def sine_(h: torch.Tensor, w0: float) -> torch.Tensor:
            return h.copy_(torch.sin(h * w0))

        _compiled["sine"] = torch.compile(sine_, dynamic=True)
    return _compiled["sine"]


def _sine_(h: torch.Tensor, w0: float, compiled: Callable[[torch.Tensor, float], torch.Tensor] | None) -> None:
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


def siren_harmonics_forward(posenc: SphericalHarmonics, nnet: SirenNet, lonlat: torch.Tensor, chunk_rows: int | None = None) -> torch.Tensor:
    """(N, 2) validated [lon, lat] degrees -> (N, output_dim) in the network's dtype, chunk by chunk.

    Default chunks: ``CHUNK_ROWS`` on one thread; with several threads the whole call is one chunk
    (every operation is a parallel region, and many short ones stalled badly on oversubscribed
    cores: 0.07-0.17 of the GEMM bound at 2 threads on a loaded machine, see docs/speed.md)."""
    if chunk_rows is None:
        chunk_rows = CHUNK_ROWS if torch.get_num_threads() == 1 else max(lonlat.shape[0], 1)
    layers = [*nnet.layers, nnet.last_layer]
    weights = [layer.weight.detach().t() for layer in layers]
    biases = [layer.bias.detach() for layer in layers]
    dtype, L, n = weights[0].dtype, posenc.legendre_polys, lonlat.shape[0]
    lonlat = lonlat.to(torch.float64)
    out = empty_output(n, weights[-1].shape[1], dtype, lonlat.device)
    rows = min(chunk_rows, max(n, 1))
    feats64 = torch.empty(rows, L * L, dtype=torch.float64)
    feats = feats64 if dtype == torch.float64 else torch.empty(rows, L * L, dtype=dtype)
    hidden = [torch.empty(rows, w.shape[1], dtype=dtype) for w in weights[:-1]]
    compiled = _compiled_sine()
    for start in range(0, n, rows):
        stop = min(start + rows, n)
        f64, x = feats64[: stop - start], feats[: stop - start]
        fill_harmonics(lonlat[start:stop], L, posenc.convention, posenc.engine, f64)
        if x is not f64:
            x.copy_(f64)
        for layer, w, b, h in zip(layers[:-1], weights, biases, hidden):
            h = h[: stop - start]
            torch.addmm(b, x, w, out=h)
            _sine_(h, layer.w0, compiled)
            x = h
        torch.addmm(biases[-1], x, weights[-1], out=out[start:stop])
    return out
