"""``satclip embed``: embed the coordinates of a CSV, Parquet or NPY file with a location tower.

Streaming: the input is read in chunks (:func:`satclip.tables.read_chunks`), each chunk is
embedded in batches (:func:`embed_array`, the one batched-embedding loop) and written straight out
(:mod:`satclip.io.writers`: ``.npy`` rows in place, Parquet row groups, CSV appends), so memory stays
flat however many rows there are. Row order is kept; for CSV/Parquet inputs every non-coordinate
column (ids, targets) is carried to CSV/Parquet outputs next to ``emb_0 .. emb_{D-1}``. Bad
coordinates (:data:`satclip.geo.LONLAT_RULE`) stop the run with an error naming the file and the
global row numbers (0-based data rows); the output is written under a temporary name and renamed
into place only when every row succeeded (:func:`satclip.outputs.written_whole`), and an existing
output is replaced only with ``overwrite``. ``--geoparquet`` adds a WKB point ``geometry`` column
and GeoParquet metadata to a Parquet output (:mod:`.geoparquet`).

A time-aware tower (``sphericalharmonics_time``) takes the acquisition time too: ``--time-col``
names a column of ISO 8601 text, Arrow timestamps / dates, or numbers (Unix seconds UTC); empty
values are unknown (NaN), text that is no time is an error naming the row. Without ``--time-col``
(or for an (N, 2) ``.npy``) every time is unknown; an (N, 3) ``.npy`` holds [lon, lat, t].
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from ..cliargs import add_device_argument, add_dim_argument, add_output_arguments, add_progress_argument, add_tower_dtype_argument, check_device
from ..columns import add_coordinate_arguments
from ..extras import requires_extra
from ..location import LocationEncoder
from ..outputs import refuse_existing, written_whole
from ..tables import ColumnTypeChanged, check_coordinates, check_format, read_chunks
from .checkpoints import load_location_encoder
from .writers import OUTPUT_FORMATS, open_writer

READ_ROWS = 65536  # rows per Parquet / NPY read chunk (and per output write)


def embed_array(
    encoder: LocationEncoder, lonlat: np.ndarray, *, batch_size: int = 8192, device: str | torch.device = "cpu", dtype: np.dtype | type | None = None
) -> np.ndarray:
    """(n, 2) [lon, lat] degrees -> (n, output_dim) embeddings, ``batch_size`` rows at a time: the one
    batched-embedding loop (files, grids, geolocation, probes and plots all use it).

    The tower runs in eval mode (embedding is inference: no dropout, no time dropout; its mode is
    restored after), in its own dtype (autocast off). Output in ``dtype`` (default: the encoder's). A time-aware tower takes (n, 3) [lon, lat, t]; given (n, 2) it
    embeds with every time unknown (NaN). A static tower given (n, 3) raises ``ValueError``."""
    if lonlat.shape[1:] == (3,) and not encoder.takes_time:
        raise ValueError("the location tower takes no time (a static tower): give (N, 2) [lon, lat]; (N, 3) [lon, lat, t] is the input of a time-aware tower")
    if encoder.takes_time and lonlat.shape[1:] == (2,):
        lonlat = np.concatenate([lonlat, np.full((lonlat.shape[0], 1), np.nan)], axis=1)
    if dtype is None:
        dtype = torch.empty((), dtype=encoder.dtype).numpy().dtype
    out = np.empty((lonlat.shape[0], encoder.output_dim), dtype=dtype)
    training = encoder.training
    encoder.eval()
    try:
        with torch.inference_mode(), torch.autocast(device_type=torch.device(device).type, enabled=False):
            for i in range(0, lonlat.shape[0], batch_size):
                batch = torch.from_numpy(np.ascontiguousarray(lonlat[i : i + batch_size], dtype=np.float64)).to(device)
                # torch's copy runs on all torch threads (numpy's is serial): the result's first touch, its
                # page faults, is a sixth of a float64 L = 10 tower's time and would not scale otherwise
                torch.from_numpy(out[i : i + batch_size]).copy_(encoder(batch))
    finally:
        encoder.train(training)
    return out


@requires_extra("embedding a CSV or Parquet file")
def embed_file(
    encoder: LocationEncoder,
    input: str | Path,
    *,
    output: str | Path,
    lon_col: str | None = None,
    lat_col: str | None = None,
    batch_size: int = 8192,
    device: str | torch.device = "cpu",
    progress: bool = True,
    crs: str | None = None,
    geoparquet: bool = False,
    time_col: str | None = None,
    overwrite: bool = False,
) -> int:
    """Embed every row of ``input`` into ``output`` (streaming, order kept); returns the number of rows.

    ``geoparquet`` (``.parquet`` output only) adds a WKB point ``geometry`` column and GeoParquet metadata.
    ``time_col``: the acquisition-time column for a time-aware tower (module docstring). An existing
    ``output`` is an :class:`satclip.outputs.OutputExistsError` unless ``overwrite``.

    A carried CSV column whose values stop fitting the type inferred from the first rows (an id that
    turns from numbers to text) is read as text: the file is read again from the start."""
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    if time_col is not None and not encoder.takes_time:
        raise ValueError(f"--time-col {time_col!r}: this location tower takes no time (a static tower); leave --time-col out")
    refuse_existing(output, overwrite=overwrite)
    text: list[str] = []
    while True:
        try:
            return _embed_once(
                encoder,
                Path(input),
                output=Path(output),
                lon_col=lon_col,
                lat_col=lat_col,
                crs=crs,
                batch_size=batch_size,
                device=device,
                progress=progress,
                text=text,
                geoparquet=geoparquet,
                time_col=time_col,
            )
        except ColumnTypeChanged as change:  # a carried column (read_chunks reports coordinate columns itself)
            if change.column in text:
                raise ValueError(str(change)) from None
            text.append(change.column)


def _embed_once(
    encoder: LocationEncoder,
    input: Path,
    *,
    output: Path,
    lon_col: str | None,
    lat_col: str | None,
    crs: str | None,
    batch_size: int,
    device: str | torch.device,
    progress: bool,
    text: Sequence[str],
    geoparquet: bool = False,
    time_col: str | None = None,
) -> int:
    from tqdm import tqdm

    out_fmt = check_format(output, OUTPUT_FORMATS, what="output")
    if geoparquet and out_fmt != ".parquet":
        raise ValueError(f"output {str(output)!r}: --geoparquet writes Parquet; name the output .parquet")
    rows, chunks = read_chunks(input, lon_col=lon_col, lat_col=lat_col, chunk_rows=max(batch_size, READ_ROWS), crs=crs, text=text, time_col=time_col)
    encoder = encoder.to(device).eval()
    dim, dtype = encoder.output_dim, torch.empty((), dtype=encoder.dtype).numpy().dtype
    done = 0
    with written_whole(output) as partial:
        writer = open_writer(partial, out_fmt, rows=rows, dim=dim, dtype=dtype, geoparquet=geoparquet)
        try:
            with tqdm(total=rows, unit="pt", unit_scale=True, desc=f"embed {input.name}", disable=not progress) as bar:
                for start, lonlat, carried in chunks:
                    check_coordinates(lonlat, start=start, source=repr(str(input)))
                    writer.write(start, embed_array(encoder, lonlat, batch_size=batch_size, device=device), carried=carried, lonlat=lonlat)
                    done += lonlat.shape[0]
                    bar.update(lonlat.shape[0])
        finally:
            writer.close()
        if done != rows:
            raise RuntimeError(f"{str(input)!r}: read {done} rows but expected {rows}")
    return done


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--checkpoint", required=True, help="checkpoint file, hub id (microsoft/SatCLIP-ResNet18-L10), https URL or export directory")
    parser.add_argument("--input", required=True, help="coordinates: .csv / .parquet with longitude and latitude columns, or an (N, 2) [lon, lat] .npy")
    add_output_arguments(parser, help="embeddings: .npy (N, D), or .parquet / .csv (carried columns + emb_0..emb_{D-1})")
    add_coordinate_arguments(parser)
    parser.add_argument(
        "--time-col", default=None, help="acquisition-time column for a time-aware tower: ISO 8601 text, timestamps or Unix seconds (default: time unknown)"
    )
    parser.add_argument("--batch-size", type=int, default=8192, help="points per forward pass (default: 8192)")
    add_device_argument(parser)
    add_tower_dtype_argument(parser, help="precision of the tower and the output (default: the checkpoint's)")
    add_dim_argument(parser)
    parser.add_argument("--geoparquet", action="store_true", help="(.parquet output) add a WKB point 'geometry' column and GeoParquet metadata")
    add_progress_argument(parser)


def run(args: argparse.Namespace) -> int:
    check_device(args.device)
    refuse_existing(args.out, overwrite=args.overwrite)
    encoder = load_location_encoder(args.checkpoint, device=args.device, dtype=args.tower_dtype, dim=args.dim)
    if encoder.takes_time and args.time_col is None and not str(args.input).lower().endswith(".npy"):
        print("satclip embed: a time-aware tower and no --time-col: every time is unknown (time-free embeddings)", file=sys.stderr)
    rows = embed_file(
        encoder,
        args.input,
        output=args.out,
        lon_col=args.lon_col,
        lat_col=args.lat_col,
        batch_size=args.batch_size,
        device=args.device,
        progress=not args.no_progress,
        crs=args.crs,
        geoparquet=args.geoparquet,
        time_col=args.time_col,
        overwrite=args.overwrite,
    )
    print(f"wrote {rows} embeddings ({encoder.output_dim} dims, {str(encoder.dtype).removeprefix('torch.')}) to {args.out}")
    return 0
