"""``satclip embed-grid``: location embeddings of a lon/lat grid as a COG GeoTIFF or a Zarr store.

Each pixel holds the embedding of its centre (see :mod:`.grid`). The grid streams tile by tile
(``--tile`` x ``--tile`` pixels; memory is bounded by one tile of output plus one batch of the
tower, whatever the extent); ``--dim K`` keeps the first K dimensions and ``--pca K`` stores the
first K principal components fitted on a regular sample of the grid (the fit is saved beside the
output as ``<name>.pca.npz``); ``--storage-dtype int8`` quantises with a per-band scale and offset from
the same sample (:class:`.bands.Quantiser`). A bbox crossing the antimeridian is rejected: embed
it as two boxes. The output appears only when complete, and replaces an existing one only with
``overwrite``. Before anything is computed the output's size (pixels x bands x bytes, uncompressed)
is checked against ``max_gb`` (:data:`MAX_GB` unless raised): a world grid at 0.0001 degrees is
refused at once, not after hours. An error, Ctrl-C or SIGTERM (``satclip`` turns it into an
exception) removes the staging files (``OUT.partial*``, ``OUT.zarr.partial/``); only SIGKILL,
which no process can handle, leaves them, and the next run over the same output removes them.
"""

from __future__ import annotations

import argparse
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from .. import __version__
from ..cliargs import add_device_argument, add_dim_argument, add_output_arguments, add_progress_argument, add_tower_dtype_argument, check_device
from ..location import LocationEncoder
from ..outputs import refuse_existing
from .bands import BandMap, PCAFit, Quantiser
from .embed import embed_array
from .grid import Grid, time_estimate
from .rasters import STORAGE_DTYPES, RasterSpec

FORMATS = {".tif": "cog", ".tiff": "cog", ".zarr": "zarr"}
SAMPLE = 65536
MAX_GB = 100.0
"""The largest output written unless the limit is raised (``max_gb``, ``--max-gb``): uncompressed
gigabytes (1e9 bytes) = pixels x bands x bytes per value."""


@dataclass
class GridResult:
    path: Path
    pixels: int
    bands: int
    seconds: float
    clipped: int = 0
    pca_path: Path | None = None


def pca_path(output: str | Path) -> Path:
    """Where the PCA fit of ``output`` is saved: ``emb.tif`` -> ``emb.pca.npz``."""
    output = Path(output)
    return output.with_name(output.stem + ".pca.npz")


def _writer(output: Path, spec: RasterSpec):
    fmt = FORMATS.get(output.suffix.lower())
    if fmt is None:
        raise ValueError(f"output {str(output)!r}: unsupported format {output.suffix or '(no extension)'!r}; use .tif or .zarr")
    if fmt == "zarr":
        from .zarr_grid import ZarrWriter

        return ZarrWriter(output, spec)
    from .cog import COGWriter

    return COGWriter(output, spec)


def _size_text(size: float) -> str:
    unit = next((u for u, scale in (("PB", 1e15), ("TB", 1e12), ("GB", 1e9)) if size >= scale), "MB")
    return f"{size / {'PB': 1e15, 'TB': 1e12, 'GB': 1e9, 'MB': 1e6}[unit]:,.3g} {unit}"


def check_size(grid: Grid, bands: int, *, dtype: str, max_gb: float = MAX_GB, at_least: bool = False) -> int:
    """The output's uncompressed size in bytes; a :class:`ValueError` saying how to make it smaller
    when it is above ``max_gb`` gigabytes. ``at_least``: ``bands`` is a lower bound (the tower is not
    loaded yet), said so in the message."""
    size = grid.width * grid.height * bands * np.dtype(dtype).itemsize
    if size > max_gb * 1e9:
        count = f"at least {bands} band{'s' if bands > 1 else ''}" if at_least else f"{bands} bands"
        raise ValueError(
            f"the output would be {grid.width} x {grid.height} = {grid.width * grid.height:.3g} pixels x {count} x "
            f"{np.dtype(dtype).itemsize} bytes ({dtype}) = {_size_text(size)} uncompressed, above the limit of {max_gb:g} GB "
            f"(computing it: {time_estimate(grid.width * grid.height)}): "
            "use a coarser --resolution (twice as coarse is 4x smaller), a smaller --bbox, fewer bands (--dim K or --pca K) "
            "or --storage-dtype float16 / int8; or raise the limit with --max-gb"
        )
    return size


def check_output(
    output: str | Path, grid: Grid, *, bands: int | None, dtype: str, pca: int | None = None, overwrite: bool = False, max_gb: float = MAX_GB
) -> None:
    """Everything about ``output`` that can be refused before a tower is loaded: its format, its
    storage ``dtype``, an existing file (or ``.pca.npz``) without ``overwrite``, and its size
    (:func:`check_size`; ``bands`` None: not known before the tower is loaded, at least 1)."""
    output = Path(output)
    if output.suffix.lower() not in FORMATS:
        raise ValueError(f"output {str(output)!r}: unsupported format {output.suffix or '(no extension)'!r}; use .tif or .zarr")
    if dtype not in STORAGE_DTYPES:
        raise ValueError(f"--storage-dtype: expected one of {', '.join(STORAGE_DTYPES)}, got {dtype!r}")
    refuse_existing(output, pca_path(output) if pca is not None else None, overwrite=overwrite)
    check_size(grid, bands or 1, dtype=dtype, max_gb=max_gb, at_least=bands is None)


def _embed(encoder: LocationEncoder, lonlat: np.ndarray, *, batch_size: int, device: str | torch.device) -> np.ndarray:
    return embed_array(encoder, lonlat, batch_size=batch_size, device=device).astype(np.float64, copy=False)


def embed_grid(
    encoder: LocationEncoder,
    output: str | Path,
    *,
    grid: Grid,
    dims: int | None = None,
    pca: int | None = None,
    dtype: str = "float32",
    tile: int = 256,
    batch_size: int = 8192,
    device: str | torch.device = "cpu",
    sample: int = SAMPLE,
    attrs: dict[str, str] | None = None,
    progress: bool = True,
    overwrite: bool = False,
    max_gb: float = MAX_GB,
) -> GridResult:
    """Embed every pixel centre of ``grid`` into ``output`` (.tif COG or .zarr); see the module docstring."""
    from tqdm import tqdm

    if batch_size < 1:
        raise ValueError(f"--batch-size must be >= 1, got {batch_size}")
    output = Path(output)
    check_output(output, grid, bands=pca or dims or encoder.output_dim, dtype=dtype, pca=pca, overwrite=overwrite, max_gb=max_gb)
    start = time.perf_counter()
    encoder = encoder.to(device).eval()
    band_map = BandMap(encoder.output_dim, dims=dims)
    quantiser = None
    if pca is not None or dtype == "int8":
        sample_emb = _embed(encoder, grid.sample(sample), batch_size=batch_size, device=device)
        fit = PCAFit.fit(sample_emb, pca) if pca is not None else None
        band_map = BandMap(encoder.output_dim, dims=dims, pca=fit)
        if dtype == "int8":
            quantiser = Quantiser.from_sample(band_map(sample_emb))
        del sample_emb
    info = {
        "satclip_version": __version__,
        "satclip_content": "principal components of location embeddings" if pca else "location embeddings",
        "satclip_pixel_coordinates": "each pixel holds the embedding of its centre (lon, lat) in EPSG:4326",
        **(attrs or {}),
    }
    spec = RasterSpec(grid, band_map.names, dtype, tile, quantiser, info)
    output.parent.mkdir(parents=True, exist_ok=True)
    writer = None
    try:
        writer = _writer(output, spec)
        with tqdm(total=grid.width * grid.height, unit="px", unit_scale=True, desc=f"embed-grid {output.name}", disable=not progress) as bar:
            for window in grid.tiles(tile):
                centres = grid.centres(window)
                block = np.empty((window.size, spec.count), dtype=np.int8 if dtype == "int8" else np.dtype(dtype))
                for i in range(0, window.size, batch_size):
                    values = band_map(_embed(encoder, centres[i : i + batch_size], batch_size=batch_size, device=device))
                    block[i : i + batch_size] = spec.encode(values)
                    bar.update(len(values))
                writer.write(window, np.ascontiguousarray(block.T.reshape(spec.count, window.height, window.width)))
        writer.close()
    except BaseException:  # Ctrl-C and SIGTERM (see satclip.cli) included
        if writer is not None:
            writer.abort()
        raise
    saved = None
    if band_map.pca is not None:
        saved = band_map.pca.save(pca_path(output), output=output.name, sample_pixels=sample, **{k: v for k, v in info.items() if k.startswith("satclip_")})
    return GridResult(output, grid.width * grid.height, spec.count, time.perf_counter() - start, quantiser.clipped if quantiser else 0, saved)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--checkpoint", required=True, help="checkpoint file, hub id, https URL or exported location tower")
    parser.add_argument(
        "--bbox",
        type=float,
        nargs=4,
        required=True,
        metavar=("W", "S", "E", "N"),
        help="degrees; whole pixels; west <= east (a box across the antimeridian is rejected: make two)",
    )
    parser.add_argument("--resolution", type=float, required=True, help="pixel size in degrees (e.g. 0.1)")
    add_output_arguments(parser, help=".tif (Cloud-Optimised GeoTIFF) or .zarr (xarray-readable store); with --pca also <name>.pca.npz")
    reduce = parser.add_mutually_exclusive_group()
    add_dim_argument(parser, old_spelling=True, group=reduce)
    reduce.add_argument("--pca", type=int, help="store the first K principal components (fit saved as <name>.pca.npz)")
    parser.add_argument(
        "--storage-dtype",
        "--dtype",
        dest="storage_dtype",
        choices=STORAGE_DTYPES,
        default="float32",
        help="type of the stored values (int8: per-band scale and offset; --dtype: old spelling)",
    )
    parser.add_argument("--tile", type=int, default=256, help="tile / chunk size in pixels (default 256)")
    parser.add_argument("--sample", type=int, default=SAMPLE, help="pixels sampled for --pca and int8 ranges (default 65536)")
    parser.add_argument("--batch-size", type=int, default=8192, help="points per forward pass (default 8192)")
    add_device_argument(parser)
    add_tower_dtype_argument(parser, help="precision of the tower (default: the checkpoint's)", old_spelling=False)
    add_progress_argument(parser)
    parser.add_argument(
        "--max-gb", type=float, default=MAX_GB, help=f"refuse an output above this many GB uncompressed, pixels x bands x bytes (default {MAX_GB:g})"
    )


def run(args: argparse.Namespace) -> int:
    from .checkpoints import load_location_encoder

    check_device(args.device)
    try:
        grid = Grid.from_bbox(args.bbox, args.resolution)
        check_output(args.out, grid, bands=args.pca or args.dim, dtype=args.storage_dtype, pca=args.pca, overwrite=args.overwrite, max_gb=args.max_gb)
        encoder = load_location_encoder(args.checkpoint, device=args.device, dtype=args.tower_dtype)
        result = embed_grid(
            encoder,
            args.out,
            grid=grid,
            dims=args.dim,
            pca=args.pca,
            dtype=args.storage_dtype,
            tile=args.tile,
            batch_size=args.batch_size,
            device=args.device,
            sample=args.sample,
            attrs={"satclip_checkpoint": str(args.checkpoint)},
            progress=not args.no_progress,
            overwrite=args.overwrite,
            max_gb=args.max_gb,
        )
    except (ValueError, FileNotFoundError, ImportError) as err:
        raise SystemExit(f"satclip embed-grid: {err}") from None
    rate = result.pixels / max(result.seconds, 1e-9)
    print(
        f"wrote {result.pixels} pixels x {result.bands} bands ({args.storage_dtype}) to {result.path} in {result.seconds:.1f} s ({rate:,.0f} px/s)"
        + (f"; {result.clipped} int8 values clipped" if result.clipped else "")
        + (f"; PCA fit in {result.pca_path}" if result.pca_path else "")
    )
    return 0
