"""``satclip export``: a checkpoint's location tower as ``model.safetensors`` + ``config.json``,
optionally TorchScript and ONNX, optionally truncated to its first ``--dim`` dimensions
(``config.json`` records the Matryoshka prefixes it was trained with, ``matryoshka_dims``).

The directory loads back with ``satclip.load_location_encoder(DIR)``, which needs only torch and
safetensors. TorchScript and ONNX files hold a graph-friendly version of the tower: the spherical
harmonics as a pure-tensor recurrence (no sphericart, no in-place buffers), longitudes wrapped in
the graph, and no input validation (the caller passes finite [lon, lat] degrees with |lat| <= 90).
Their input is always float64 (N, 2) [lon, lat] degrees (``lonlat``), so coordinates keep full
precision; a time-aware tower's is (N, 3) [lon, lat, t] (``lonlat_time``, t in Unix seconds UTC, NaN
unknown). The output has the export's dtype. Float64 constants stay float64 in the ONNX graph.

``model.onnx`` is in the export's dtype; ``onnx_precisions`` adds ``model.fp32.onnx`` (for a float64
export), ``model.fp16.onnx`` and ``model.int8.onnx`` (see :mod:`satclip.io.onnx_formats`). Every ONNX
file is measured against the float64 tower and refused beyond its bound; ``config.json`` records the
figures under ``onnx_formats`` and ``onnx_check``.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import math
import tempfile
import warnings
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..cliargs import add_dim_argument, add_output_arguments, add_tower_dtype_argument
from ..extras import requires_extra
from ..hubfiles import push_folder
from ..location import LocationEncoder, SphericalHarmonics
from ..location.harmonics import graph_spherical_harmonics
from ..location.serialization import EXPORT_CONFIG, EXPORT_WEIGHTS, export_config, write_config, write_weights
from ..location.temporal import space_time_product, temporal_terms
from ..outputs import refuse_existing
from .checkpoints import load_location_encoder
from .onnx_formats import (
    BENCH_THREADS,
    ERROR_BOUNDS,
    ONNX_FILE,
    PRECISIONS,
    FormatRefused,
    check_bound,
    check_points,
    check_record,
    convert_fp16,
    measure,
    onnx_file,
    quantize_int8,
    reference_embeddings,
)

TORCHSCRIPT_FILE = "model.torchscript.pt"
ONNX_OPSET = 17


class GraphLocationEncoder(nn.Module):
    """A ``LocationEncoder`` rewritten for tracing: (N, 2) float64 [lon, lat] (time-aware: (N, 3)
    [lon, lat, t]) -> (N, output_dim).

    No validation (data-dependent branches cannot be traced); longitudes outside [-180, 180] are
    wrapped with ``torch.where``, which leaves values inside untouched (bit-identical results).
    """

    def __init__(self, encoder: LocationEncoder) -> None:
        super().__init__()
        self.posenc = encoder.posenc
        self.nnet = encoder.nnet
        self.out_dtype = encoder.dtype
        self.takes_time = encoder.takes_time
        self.harmonics = isinstance(encoder.posenc, SphericalHarmonics) or self.takes_time
        self.legendre_polys = int(getattr(encoder.posenc, "legendre_polys", 0))
        self.convention = str(getattr(encoder.posenc, "convention", ""))
        self.time_harmonics = int(getattr(encoder.posenc, "time_harmonics", 0))
        self.year_trend = bool(getattr(encoder.posenc, "year_trend", False))

    def forward(self, lonlat: torch.Tensor) -> torch.Tensor:
        inputs = lonlat.to(torch.float64)
        lon, lat = inputs[:, 0], inputs[:, 1]
        lon = torch.where((lon < -180.0) | (lon > 180.0), torch.remainder(lon + 180.0, 360.0) - 180.0, lon)
        lonlat = torch.stack([lon, lat], dim=1)
        if self.harmonics:
            feats = graph_spherical_harmonics(lonlat, self.legendre_polys, convention=self.convention)
        else:
            feats = self.posenc(lonlat)
        if self.takes_time:
            feats = space_time_product(feats, temporal_terms(inputs[:, 2], self.time_harmonics, year_trend=self.year_trend))
        return self.nnet(feats.to(self.out_dtype))


def _example_input(n: int = 7, with_time: bool = False) -> torch.Tensor:
    lon = torch.linspace(-179.0, 179.0, n, dtype=torch.float64)
    lat = torch.linspace(-89.0, 89.0, n, dtype=torch.float64)
    if not with_time:
        return torch.stack([lon, lat], dim=1)
    t = torch.linspace(1.5e9, 1.7e9, n, dtype=torch.float64)
    t[-1] = math.nan  # unknown
    return torch.stack([lon, lat, t], dim=1)


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """Silence torch's deprecation notices for jit/legacy ONNX, its note on un-foldable reversed slices,
    and tracer notes on the coordinate validator (its checks pass on the example input and are not needed:
    graph inputs are documented as valid, and longitudes are wrapped before the encoding)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        warnings.simplefilter("ignore", DeprecationWarning)
        warnings.filterwarnings("ignore", message="Constant folding")
        # validation inside other encodings traces as its valid branch; the graph wraps longitudes itself
        warnings.filterwarnings("ignore", category=torch.jit.TracerWarning, module=r"satclip\.geo")
        yield


def _graph(encoder: LocationEncoder) -> GraphLocationEncoder:
    """The graph version of ``encoder``, run once so that cached constants (recurrence coefficients)
    exist before tracing and every traced invocation records the same graph."""
    graph = GraphLocationEncoder(encoder).eval()
    with torch.no_grad():
        graph(_example_input(with_time=graph.takes_time))
    return graph


def _deg2rad_symbolic(g: Any, x: Any) -> Any:
    """ONNX for ``aten::deg2rad`` (used by other encodings): x * (pi / 180) with a constant of x's own dtype."""
    dtype = torch.float64 if x.type().scalarType() == "Double" else torch.float32
    return g.op("Mul", x, g.op("Constant", value_t=torch.tensor(math.pi / 180.0, dtype=dtype)))


def export_torchscript(encoder: LocationEncoder, path: str | Path) -> Path:
    """Trace the graph version of ``encoder`` to a TorchScript file (load with ``torch.jit.load``)."""
    graph = _graph(encoder)
    with torch.no_grad(), _quiet():
        example, check = _example_input(with_time=graph.takes_time), _example_input(3, with_time=graph.takes_time)
        traced = torch.jit.trace(graph, example, check_inputs=[(check,)])
        torch.jit.save(traced, str(path))
    return Path(path)


@requires_extra("ONNX export")
def export_onnx(encoder: LocationEncoder, path: str | Path, *, opset: int = ONNX_OPSET) -> Path:
    """Export the graph version of ``encoder`` to ONNX: input ``lonlat`` (N, 2) float64 (time-aware:
    ``lonlat_time`` (N, 3) [lon, lat, t]), output ``embedding``."""
    graph = _graph(encoder)
    name = "lonlat_time" if graph.takes_time else "lonlat"
    torch.onnx.register_custom_op_symbolic("aten::deg2rad", _deg2rad_symbolic, opset)
    with torch.no_grad(), _quiet():
        torch.onnx.export(
            graph,
            (_example_input(with_time=graph.takes_time),),
            str(path),
            input_names=[name],
            output_names=["embedding"],
            dynamic_axes={name: {0: "n"}, "embedding": {0: "n"}},
            opset_version=opset,
            dynamo=False,
        )
    return Path(path)


DERIVED = {"fp16": convert_fp16, "int8": quantize_int8}
"""Precisions converted from the float32 graph, by the function that writes them."""


@requires_extra("ONNX export")
def write_onnx_formats(
    encoder: LocationEncoder,
    out: Path,
    *,
    precisions: Sequence[str] = (),
    bounds: Mapping[str, float] = ERROR_BOUNDS,
    threads: int = BENCH_THREADS,
) -> tuple[dict[str, str], dict[str, Any]]:
    """Write ``model.onnx`` (the export's dtype) and each of ``precisions`` to ``out``, measure each on
    the check set and raise :class:`FormatRefused` (the file removed) past its bound; returns the files
    by precision and the ``config.json`` figures (``onnx_check``, ``onnx_formats``)."""
    unknown = sorted(set(precisions) - set(PRECISIONS))
    if unknown:
        raise ValueError(f"unknown ONNX precision(s) {unknown}; choose from {list(PRECISIONS)}")
    if threads < 1:
        raise ValueError(f"ONNX Runtime threads must be >= 1, got {threads}")
    base = "fp64" if encoder.dtype == torch.float64 else "fp32"
    files = {p: onnx_file(p, base) for p in dict.fromkeys([base, *precisions])}
    points = check_points(with_time=encoder.takes_time)
    reference = reference_embeddings(encoder, points)
    scale = float(abs(reference).max())
    formats: dict[str, Any] = {}
    with tempfile.TemporaryDirectory() as tmp:
        export_onnx(encoder, out / ONNX_FILE)
        fp32 = out / files["fp32"] if "fp32" in files else Path(tmp) / "model.fp32.onnx"
        if base == "fp64" and len(files) > 1:  # the float32 graph that fp32, fp16 and int8 come from
            export_onnx(copy.deepcopy(encoder).float(), fp32)
        for precision, name in files.items():
            if precision in DERIVED:
                DERIVED[precision](fp32, out / name)
            stats = measure(out / name, points, reference=reference, threads=threads)
            try:
                check_bound(name, precision, stats=stats, scale=scale, bounds=bounds)
            except FormatRefused:
                (out / name).unlink()
                raise
            formats[name] = {"precision": precision, **stats, "max_abs_error_bound": bounds[precision] * scale}
    return files, {"onnx_check": check_record(len(points), scale, bounds={p: bounds[p] for p in files}, threads=threads), "onnx_formats": formats}


def export_location_encoder(
    encoder: LocationEncoder,
    out_dir: str | Path,
    *,
    onnx: bool = False,
    torchscript: bool = False,
    source: str | None = None,
    onnx_precisions: Sequence[str] = (),
    onnx_bounds: Mapping[str, float] = ERROR_BOUNDS,
    onnx_threads: int = BENCH_THREADS,
) -> dict[str, Any]:
    """Write ``encoder`` (in its current dtype) to ``out_dir``; returns the ``config.json`` contents.
    ``onnx_precisions`` (implies ``onnx``) adds ONNX files in those precisions (:func:`write_onnx_formats`)."""
    encoder = encoder.cpu().eval()
    config = export_config(encoder, source)
    out = write_weights(encoder, out_dir)
    if torchscript:
        export_torchscript(encoder, out / TORCHSCRIPT_FILE)
        config["files"]["torchscript"] = TORCHSCRIPT_FILE
    if onnx or onnx_precisions:
        files, figures = write_onnx_formats(encoder, out, precisions=onnx_precisions, bounds=onnx_bounds, threads=onnx_threads)
        config["files"].update({"onnx" if name == ONNX_FILE else f"onnx_{p}": name for p, name in files.items()})
        config.update(figures)
    write_config(out, config)
    return config


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--checkpoint", required=True, help="checkpoint file, hub id (microsoft/SatCLIP-ResNet18-L10), https URL or export directory")
    add_output_arguments(parser, help="output directory (an existing export in it is replaced only with --overwrite)")
    parser.add_argument("--onnx", action="store_true", help=f"also write {ONNX_FILE} (in the export's dtype; its error and points/s go to config.json)")
    parser.add_argument(
        "--onnx-precision",
        nargs="+",
        choices=PRECISIONS,
        default=[],
        metavar="P",
        help=f"also write ONNX in these precisions ({', '.join(PRECISIONS)}): model.<P>.onnx beside {ONNX_FILE} (implies --onnx; "
        "fp32 of a float32 export is model.onnx); each is measured against the float64 tower and refused past its bound (docs/models.md)",
    )
    parser.add_argument(
        "--onnx-threads", type=int, default=BENCH_THREADS, metavar="N", help="ONNX Runtime threads for the points/s in config.json (default: %(default)s)"
    )
    parser.add_argument("--torchscript", action="store_true", help=f"also write {TORCHSCRIPT_FILE}")
    add_tower_dtype_argument(parser, help="precision of the exported tower (default: the checkpoint's)")
    add_dim_argument(parser)
    parser.add_argument(
        "--push-to-hub",
        metavar="REPO",
        default=None,
        help="also upload the folder to this Hub model repository (owner/name; needs a token: hf auth login or HF_TOKEN)",
    )


def run(args: argparse.Namespace) -> int:
    refuse_existing(*(Path(args.out) / name for name in (EXPORT_CONFIG, EXPORT_WEIGHTS)), overwrite=args.overwrite)
    encoder = load_location_encoder(args.checkpoint, dtype=args.tower_dtype, dim=args.dim)
    config = export_location_encoder(
        encoder,
        args.out,
        onnx=args.onnx,
        torchscript=args.torchscript,
        source=str(args.checkpoint),
        onnx_precisions=args.onnx_precision,
        onnx_threads=args.onnx_threads,
    )
    print(
        f"exported {config['architecture']['pe']}/{config['architecture']['nn']} location tower ({config['dtype']}) to {args.out}: "
        f"{', '.join(config['files'].values())}, {EXPORT_CONFIG}"
    )
    if args.push_to_hub:
        try:
            url = push_folder(args.out, args.push_to_hub)
        except (ConnectionError, PermissionError) as err:
            raise SystemExit(f"satclip export: {err}") from None
        print(f"pushed to {url} (load with satclip.load_location_encoder('hf-hub:{args.push_to_hub}'))")
    return 0
