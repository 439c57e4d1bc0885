"""``satclip embed-images``: image-tower embeddings of Sentinel-2 patches from shards or a GeoTIFF folder.

Patches stream through the loader's evaluation path (:func:`satclip.data.folder.eval_stream`):
the checkpoint's bands (an all-zero B10 for 13-band towers), reflectance = DN / 10000, a centre
crop (the checkpoint's training crop when it records one, else 224 px). Output rows keep the
input order: ``key``, ``lon``, ``lat`` (NaN when unknown), ``emb_0 .. emb_{D-1}`` (the image
tower's output, not normalised), written under a temporary name and renamed when complete.
Unusable samples are skipped, counted by kind and reported.
"""

from __future__ import annotations

import argparse
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from ..cliargs import add_device_argument, add_output_arguments, add_progress_argument, check_device
from ..outputs import refuse_existing, written_whole
from ..tables import check_format
from .models import ImageInputs, create_model_and_transforms

if TYPE_CHECKING:
    from ..data.pipeline import ShardStream
    from ..model import SatCLIP

OUTPUT_FORMATS = (".parquet", ".csv")


def open_images(source: str | Path, inputs: ImageInputs, *, batch_size: int = 32) -> ShardStream:
    """The evaluation stream of ``source`` (shards or a GeoTIFF folder) for ``inputs``."""
    from ..data.folder import eval_stream

    if not Path(source).exists() and "{" not in str(source) and "://" not in str(source):
        raise FileNotFoundError(f"images {str(source)!r}: no such file or directory")
    return eval_stream(source, batch_size=batch_size, crop_size=inputs.crop_size, bands=inputs.bands, insert_b10=inputs.insert_b10)


@dataclass
class ImageBatch:
    keys: list[str]
    lonlat: np.ndarray  # (n, 2) float64, NaN where unknown
    embedding: np.ndarray  # (n, D) float32


def iter_image_embeddings(
    model: SatCLIP, stream: ShardStream, *, device: str | torch.device = "cpu", progress: bool = True, skipped: dict[str, int] | None = None
) -> Iterator[ImageBatch]:
    """Embed every sample of ``stream`` in order; ``skipped`` (if given) receives the skip counts by kind."""
    from tqdm import tqdm

    from ..data.folder import stream_size
    from ..data.loader import StreamLoader

    loader = StreamLoader(stream, num_workers=0)
    model = model.to(device).eval()
    with tqdm(total=stream_size(stream), unit="img", desc="embed images", disable=not progress) as bar, torch.inference_mode():
        try:
            for batch in loader:
                emb = model.encode_image(batch["image"].to(device)).float().cpu().numpy()
                bar.update(len(emb))
                yield ImageBatch(list(batch["key"]), batch["lonlat"].numpy(), emb)
        finally:
            if skipped is not None:
                skipped.update({k: v for k, v in loader.skipped.items() if v})


def embed_images(
    model: SatCLIP, stream: ShardStream, *, output: str | Path, device: str | torch.device = "cpu", progress: bool = True, overwrite: bool = False
) -> tuple[int, dict[str, int]]:
    """Write the image embeddings of ``stream`` to ``output`` (.parquet / .csv); returns (rows, skip counts).
    An existing ``output`` is an :class:`satclip.outputs.OutputExistsError` unless ``overwrite``."""
    import pyarrow as pa

    from .writers import TableWriter

    output = Path(output)
    fmt = check_format(output, OUTPUT_FORMATS, what="output")
    refuse_existing(output, overwrite=overwrite)
    skipped: dict[str, int] = {}
    writer: Any = None
    rows = 0
    with written_whole(output) as partial:
        try:
            for batch in iter_image_embeddings(model, stream, device=device, progress=progress, skipped=skipped):
                if writer is None:
                    writer = TableWriter(partial, fmt, dim=batch.embedding.shape[1])
                carried = pa.table({"key": batch.keys, "lon": batch.lonlat[:, 0], "lat": batch.lonlat[:, 1]})
                writer.write(rows, batch.embedding, carried=carried)
                rows += len(batch.keys)
        finally:
            if writer is not None:
                writer.close()
    return rows, skipped


def add_image_arguments(parser: argparse.ArgumentParser) -> None:
    """Options shared with ``satclip locate``."""
    parser.add_argument("--checkpoint", required=True, help="SatCLIP checkpoint file, hub id or https URL (with its image tower)")
    parser.add_argument("--batch-size", type=int, default=32, help="patches per forward pass (default 32)")
    parser.add_argument("--crop-size", type=int, default=None, help="centre crop in pixels (default: the checkpoint's, else 224)")
    add_device_argument(parser)
    add_progress_argument(parser)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--input", required=True, help="shards (a folder with manifest.json or *.tar, a brace pattern) or a folder of GeoTIFFs")
    add_output_arguments(parser, help=".parquet or .csv: key, lon, lat, emb_0..emb_{D-1}")
    add_image_arguments(parser)


def report_skips(skipped: dict[str, int]) -> str:
    return f"; skipped {sum(skipped.values())} ({', '.join(f'{k}: {v}' for k, v in sorted(skipped.items()))})" if skipped else ""


def run(args: argparse.Namespace) -> int:
    from ..data.errors import EmptyStreamError

    check_device(args.device)
    check_format(Path(args.out), OUTPUT_FORMATS, what="output")
    refuse_existing(args.out, overwrite=args.overwrite)
    try:
        model, preprocess = create_model_and_transforms(args.checkpoint, device=args.device, crop_size=args.crop_size)
        inputs = preprocess.inputs
        stream = open_images(args.input, inputs, batch_size=args.batch_size)
        rows, skipped = embed_images(model, stream, output=args.out, device=args.device, progress=not args.no_progress, overwrite=args.overwrite)
    except EmptyStreamError as err:
        raise SystemExit(f"satclip embed-images: {err}") from None
    print(
        f"wrote {rows} image embeddings to {args.out} (bands {inputs.bands or 'S2-100K'}"
        f"{' + zero B10' if inputs.insert_b10 else ''}, {inputs.crop_size} px centre crop){report_skips(skipped)}"
    )
    return 0
