"""ONNX precisions of an exported location tower (FP32, FP16, INT8), each measured on a fixed global
point set against the float64 tower and refused when its error exceeds a documented bound.

- ``fp32``: the float32 graph of :func:`satclip.io.export.export_onnx` (harmonics in float64, network in float32).
- ``fp16``: that graph through ``onnxruntime.transformers.float16`` with ``keep_io_types``: input float64
  (the harmonics stay float64), network float16, output float32.
- ``int8``: ``onnxruntime.quantization.quantize_dynamic``: 8-bit weights (uint8, asymmetric per tensor),
  uint8 activations quantised at run time, on the MatMul / Gemm nodes after the first. Weights are
  unsigned because the file is checked on one CPU and run on others: with int8 weights, ONNX Runtime
  multiplies through an instruction that saturates 16-bit sums (VPMADDUBSW) on x86 CPUs with AVX2 but
  not VNNI, and the same file that met its bound where it was exported errs by a quarter of the
  embedding scale there (measured, see docs/models.md); uint8 x uint8 has no such path. The first layer reads
  the harmonics and, in a SIREN, scales its output by w0 = 30 before the sine, so it stays float32
  (quantising it too quadruples the error); the harmonics stay float64.

The error is the max / mean absolute difference to the float64 PyTorch tower on
:func:`check_points`; the bound (:data:`ERROR_BOUNDS`) is relative to the embedding's scale, the
largest absolute embedding value on those points.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..location import LocationEncoder

ONNX_FILE = "model.onnx"
PRECISIONS = ("fp32", "fp16", "int8")
"""Precisions ``satclip export --onnx-precision`` writes beside ``model.onnx``."""

ERROR_BOUNDS: dict[str, float] = {"fp64": 1e-10, "fp32": 1e-5, "fp16": 5e-3, "int8": 5e-2}
"""Largest accepted max-abs error against the float64 tower, as a fraction of the embedding's scale."""

BENCH_THREADS = 1
BENCH_ROUNDS = 5
CHECK_POINTS_SEED = 0
CHECK_POINTS_RANDOM = 4096


class FormatRefused(ValueError):
    """An ONNX precision whose measured error exceeds its bound."""


def onnx_file(precision: str, base: str) -> str:
    """``model.onnx`` for the export's own precision ``base``, else ``model.<precision>.onnx``."""
    return ONNX_FILE if precision == base else f"model.{precision}.onnx"


def _special_points() -> np.ndarray:
    """Poles (several longitudes), the antimeridian at +-180, the equator and the prime meridian, in degrees."""
    lons = np.linspace(-180.0, 180.0, 25)
    lats = np.linspace(-90.0, 90.0, 19)
    rows = [np.stack([lons, np.full_like(lons, v)], 1) for v in (90.0, -90.0, 89.999, -89.999, 0.0)]
    rows += [np.stack([np.full_like(lats, v), lats], 1) for v in (180.0, -180.0, 179.9999, -179.9999, 0.0)]
    return np.concatenate(rows)


def check_points(n_random: int = CHECK_POINTS_RANDOM, seed: int = CHECK_POINTS_SEED, *, with_time: bool = False) -> np.ndarray:
    """The fixed float64 check set: :func:`_special_points` then ``n_random`` seeded points uniform on the
    sphere, (N, 2) [lon, lat]; ``with_time`` adds t (Unix seconds 2000-2025, every 10th NaN)."""
    rng = np.random.default_rng(seed)
    uniform = np.stack([rng.uniform(-180.0, 180.0, n_random), np.degrees(np.arcsin(rng.uniform(-1.0, 1.0, n_random)))], 1)
    points = np.concatenate([_special_points(), uniform])
    if not with_time:
        return points
    t = rng.uniform(946_684_800.0, 1_735_689_600.0, len(points))
    t[::10] = np.nan
    return np.concatenate([points, t[:, None]], 1)


@contextlib.contextmanager
def _quiet_logging() -> Iterator[None]:
    """Hide the quantiser's advice (root logger) to run its pre-processing: not needed for dynamic quantisation."""
    logging.disable(logging.WARNING)
    try:
        yield
    finally:
        logging.disable(logging.NOTSET)


def convert_fp16(src: Path, dst: Path) -> Path:
    """``dst``: the float32 graph ``src`` with float16 weights and arithmetic, float32 output."""
    import onnx
    from onnxruntime.transformers.float16 import convert_float_to_float16

    onnx.save(convert_float_to_float16(onnx.load(str(src)), keep_io_types=True), str(dst))
    return dst


def quantize_int8(src: Path, dst: Path) -> Path:
    """``dst``: the float32 graph ``src`` with its MatMul / Gemm nodes but the first dynamically quantised to
    8 bits (uint8 weights and activations: no saturating kernel on any x86 CPU, see the module docstring)."""
    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic

    ops = ("MatMul", "Gemm")
    first = next(node.name for node in onnx.load(str(src)).graph.node if node.op_type in ops)
    # the quantiser rewrites Gemm as MatMul "<name>_MatMul" + Add before matching names
    with _quiet_logging():
        quantize_dynamic(src, dst, weight_type=QuantType.QUInt8, op_types_to_quantize=list(ops), nodes_to_exclude=[first, f"{first}_MatMul"])
    return dst


def reference_embeddings(encoder: LocationEncoder, points: np.ndarray) -> np.ndarray:
    """The float64 tower's embeddings of ``points`` (a float64 copy of ``encoder``'s weights)."""
    import copy

    with torch.no_grad():
        return copy.deepcopy(encoder).to(torch.float64)(torch.from_numpy(points)).numpy()


def _session(path: Path, threads: int) -> Any:
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def measure(path: Path, points: np.ndarray, *, reference: np.ndarray, threads: int = BENCH_THREADS, rounds: int = BENCH_ROUNDS) -> dict[str, float]:
    """Max / mean absolute error of ``path`` against ``reference`` on ``points`` (max also relative to the
    embedding scale, max |reference|), and its points/s in ONNX Runtime (CPU, ``threads`` threads, the
    points in one batch, best of ``rounds`` after a warm-up)."""
    session = _session(path, threads)
    feed = {session.get_inputs()[0].name: points}
    error = np.abs(session.run(None, feed)[0].astype(np.float64) - reference)
    seconds = []
    for _ in range(rounds):
        start = time.perf_counter()
        session.run(None, feed)
        seconds.append(time.perf_counter() - start)
    return {
        "max_abs_error": float(error.max()),
        "max_abs_error_relative": float(error.max() / np.abs(reference).max()),
        "mean_abs_error": float(error.mean()),
        "points_per_s": len(points) / min(seconds),
    }


def check_bound(file: str, precision: str, *, stats: Mapping[str, float], scale: float, bounds: Mapping[str, float]) -> None:
    """Raise :class:`FormatRefused` when ``stats``' max error exceeds ``bounds[precision]`` x ``scale``."""
    limit = bounds[precision] * scale
    if stats["max_abs_error"] > limit:
        raise FormatRefused(
            f"refusing {file} ({precision}): max abs error {stats['max_abs_error']:.3g} against the float64 tower "
            f"exceeds its bound {bounds[precision]:g} x embedding scale {scale:.3g} = {limit:.3g}; "
            f"export without {precision} (see docs/models.md)"
        )


def check_record(n_points: int, scale: float, *, bounds: Mapping[str, float], threads: int) -> dict[str, Any]:
    """``config.json``'s ``onnx_check``: how the figures in ``onnx_formats`` were measured."""
    import onnxruntime

    return {
        "reference": "the float64 PyTorch tower (the export's weights in float64)",
        "points": n_points,
        "point_set": f"satclip.io.onnx_formats.check_points(n_random={CHECK_POINTS_RANDOM}, seed={CHECK_POINTS_SEED}): "
        "poles, antimeridian +-180, equator and prime meridian, then uniform on the sphere",
        "embedding_scale": scale,
        "error_bounds_relative": dict(bounds),
        "timing": f"onnxruntime {onnxruntime.__version__} CPU, {threads} thread(s), one batch of all points, best of {BENCH_ROUNDS} runs",
    }
