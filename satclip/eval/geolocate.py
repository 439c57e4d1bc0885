"""``satclip locate``: where was a patch taken? Rank a location gallery by similarity to its image embedding.

The gallery is a global grid of pixel centres (``grid:RES``, ``grid:RES:land`` for land only,
from the 1 km ``global-land-mask``) or the user's candidate points (a CSV / Parquet with lon and
lat columns, or an (N, 2) ``.npy``). Gallery embeddings are computed chunk by chunk with the
checkpoint's location tower and ranked by cosine similarity with each image embedding (the
ordering of CLIP's logits); the best ``top_k`` are kept as the chunks stream past, so a
fine grid needs no more memory than a coarse one.

When an image's true location is known, the top-1 guess's great-circle error is reported; the
summary gives the median error and the accuracy within 25 / 200 / 750 / 2,500 km (street, city,
region, country, continent scales, as in geolocation papers), next to chance: a guess drawn
uniformly from the same gallery (exact expected accuracy; the median from one random draw per
image).
"""

from __future__ import annotations

import argparse
import json
import math
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
import torch.nn.functional as F

from ..cliargs import add_output_arguments, check_device
from ..geo import EARTH_RADIUS_KM, great_circle_km
from ..outputs import refuse_existing, written_whole

if TYPE_CHECKING:
    from ..location import LocationEncoder

THRESHOLDS_KM = (25, 200, 750, 2500)
MAX_GALLERY = 1e9
"""The most places a ``grid:RES`` gallery may have unless ``--max-gallery`` raises it (grid:0.01 has
6.5e8; grid:0.001, 6.5e10, would take days on any device)."""
GALLERY_CHUNK = 65536
IMAGE_CHUNK = 1024


@dataclass
class Gallery:
    """Candidate locations, read in chunks: a global grid (optionally land only) or a points file."""

    source: str
    resolution: float | None = None
    land_only: bool = False
    path: Path | None = None
    lon_col: str = "lon"
    lat_col: str = "lat"

    @classmethod
    def parse(cls, spec: str, *, lon_col: str = "lon", lat_col: str = "lat", max_places: float = MAX_GALLERY) -> Gallery:
        """``grid:RES``, ``grid:RES:land`` or the path of a points file; a grid of more than
        ``max_places`` places is refused before anything is computed."""
        if spec.startswith("grid:"):
            from ..io.grid import time_estimate

            parts = spec.split(":")
            try:
                resolution = float(parts[1])
            except (IndexError, ValueError):
                resolution = math.nan
            if len(parts) > 3 or (len(parts) == 3 and parts[2] != "land") or not (0 < resolution <= 30):
                raise ValueError(f"--gallery {spec!r}: expected grid:RES or grid:RES:land with 0 < RES <= 30 degrees")
            places = (360 / resolution) * (180 / resolution)
            if places > max_places:
                raise ValueError(
                    f"--gallery {spec!r}: {places:.3g} places to embed and rank ({360 / resolution:.6g} x {180 / resolution:.6g}; "
                    f"{time_estimate(places)}), above the "
                    f"limit of {max_places:.3g}: use a coarser grid (grid:{resolution * 10:g} has 100x fewer) or a file of "
                    "candidate points; or raise the limit with --max-gallery"
                )
            return cls(spec, resolution, len(parts) == 3)
        path = Path(spec)
        if not path.is_file():
            raise FileNotFoundError(f"--gallery {spec!r}: no such file (or use grid:RES, e.g. grid:0.5)")
        return cls(spec, path=path, lon_col=lon_col, lat_col=lat_col)

    def chunks(self, size: int | None = None) -> Iterator[np.ndarray]:
        """(n, 2) float64 [lon, lat] chunks of the gallery (about ``size`` points, default GALLERY_CHUNK)."""
        size = size or GALLERY_CHUNK
        if self.path is not None:
            from ..tables import check_coordinates, read_chunks

            _, chunks = read_chunks(self.path, lon_col=self.lon_col, lat_col=self.lat_col, chunk_rows=size)
            for start, lonlat, _ in chunks:
                check_coordinates(lonlat, start=start, source=f"gallery {str(self.path)!r}")
                yield lonlat
            return
        from ..io.grid import Grid

        if self.resolution is None:
            raise ValueError(f"gallery {self.source!r}: a grid gallery needs a resolution (grid:DEG)")
        grid = Grid.from_bbox((-180, -90, 180, 90), self.resolution)
        side = max(1, int(math.sqrt(size)))
        for window in grid.tiles(side):
            lonlat = grid.centres(window)
            if self.land_only:
                from .points import is_land

                lonlat = lonlat[is_land(lonlat)]
            if len(lonlat):
                yield lonlat


def unit_vectors(lonlat: torch.Tensor) -> torch.Tensor:
    lon, lat = torch.deg2rad(lonlat.double()).unbind(-1)
    return torch.stack([torch.cos(lat) * torch.cos(lon), torch.cos(lat) * torch.sin(lon), torch.sin(lat)], dim=-1)


@dataclass
class Ranking:
    """Top-k gallery guesses per image and what chance would do."""

    scores: torch.Tensor  # (N, k) cosine similarity, best first
    lonlat: torch.Tensor  # (N, k, 2)
    chance_hits: torch.Tensor  # (N, len(THRESHOLDS_KM)) fraction of the gallery within each threshold of the truth
    chance_guess: torch.Tensor  # (N, 2) one uniformly random gallery point per image
    gallery_size: int
    truth: torch.Tensor  # (N, 2) true [lon, lat], NaN where unknown

    @property
    def known(self) -> torch.Tensor:
        return torch.isfinite(self.truth).all(dim=1)

    def errors_km(self) -> torch.Tensor:
        """Great-circle error of each image's top-1 guess (NaN where the truth is unknown)."""
        errors = torch.full((len(self.truth),), math.nan, dtype=torch.float64)
        errors[self.known] = great_circle_km(self.lonlat[self.known, 0], self.truth[self.known])
        return errors


@torch.no_grad()
def rank_gallery(
    image_emb: torch.Tensor,
    truth: torch.Tensor,
    *,
    encoder: LocationEncoder,
    gallery: Gallery,
    top_k: int = 5,
    batch_size: int = 8192,
    device: str | torch.device = "cpu",
    seed: int = 0,
    progress: bool = True,
) -> Ranking:
    """Stream the gallery past (N, D) image embeddings; keep each image's ``top_k`` most similar locations."""
    from tqdm import tqdm

    from ..io.embed import embed_array

    if top_k < 1:
        raise ValueError(f"--top-k must be >= 1, got {top_k}")
    n = len(image_emb)
    images = F.normalize(image_emb.float(), dim=-1).to(device)
    scores = torch.full((n, top_k), -math.inf)
    guesses = torch.full((n, top_k, 2), math.nan, dtype=torch.float64)
    known = torch.isfinite(truth).all(dim=1)
    truth_unit = unit_vectors(torch.where(known[:, None], truth, 0.0))
    cos_limits = torch.tensor([math.cos(t / EARTH_RADIUS_KM) for t in THRESHOLDS_KM], dtype=torch.float64)
    near = torch.zeros(n, len(THRESHOLDS_KM), dtype=torch.float64)
    rng = np.random.default_rng(seed)
    chance = torch.full((n, 2), math.nan, dtype=torch.float64)
    seen = 0
    encoder = encoder.to(device).eval()
    with tqdm(unit="loc", unit_scale=True, desc=f"rank gallery {gallery.source}", disable=not progress) as bar:
        for lonlat in gallery.chunks():
            g = torch.from_numpy(lonlat)
            locations = F.normalize(torch.from_numpy(embed_array(encoder, lonlat, batch_size=batch_size, device=device)).float(), dim=-1).to(device)
            g_unit = unit_vectors(g).T
            for i in range(0, n, IMAGE_CHUNK):
                part = slice(i, i + IMAGE_CHUNK)
                top = (images[part] @ locations.T).topk(min(top_k, len(g)), dim=1)
                merged_s = torch.cat([scores[part], top.values.cpu()], dim=1)
                merged_g = torch.cat([guesses[part], g[top.indices.cpu()]], dim=1)
                best = merged_s.topk(top_k, dim=1).indices
                scores[part] = merged_s.gather(1, best)
                guesses[part] = merged_g.gather(1, best[..., None].expand(-1, -1, 2))
                cosines = truth_unit[part] @ g_unit  # (images, gallery): cos of the angular distance
                near[part] += (cosines[..., None] >= cos_limits).sum(dim=1).double()
            seen += len(g)
            replace = torch.from_numpy(rng.random(n) < len(g) / seen)  # reservoir: a uniform gallery point per image
            chance[replace] = g[torch.from_numpy(rng.integers(0, len(g), n))][replace]
            bar.update(len(g))
    if seen == 0:
        raise ValueError(f"--gallery {gallery.source!r} holds no locations")
    return Ranking(scores, guesses, near / seen, chance, seen, truth.double())


def summarise(ranking: Ranking) -> dict[str, object]:
    """Median error and accuracy within each threshold, with chance, over the images whose location is known."""
    known = ranking.known
    out: dict[str, object] = {"images": len(known), "with_location": int(known.sum()), "gallery": ranking.gallery_size}
    if not bool(known.any()):
        return out
    errors = ranking.errors_km()[known]
    out["median_km"] = float(errors.median())
    out["chance_median_km"] = float(great_circle_km(ranking.chance_guess[known], ranking.truth[known]).median())
    for j, t in enumerate(THRESHOLDS_KM):
        out[f"acc_{t}km"] = float((errors <= t).double().mean())
        out[f"chance_acc_{t}km"] = float(ranking.chance_hits[known, j].mean())
    return out


def summary_text(summary: dict[str, Any]) -> str:
    """A markdown table: median km and accuracies, model vs chance."""
    head = f"{summary['images']} images ({summary['with_location']} with a known location), gallery of {summary['gallery']} locations"
    if "median_km" not in summary:
        return head
    rows = ["| | median km | " + " | ".join(f"<= {t:,} km" for t in THRESHOLDS_KM) + " |", "|---|---|" + "---|" * len(THRESHOLDS_KM)]
    for name, prefix in (("model", ""), ("chance", "chance_")):
        cells = [f"{summary[f'{prefix}median_km']:,.0f}"] + [f"{100 * summary[f'{prefix}acc_{t}km']:.1f}%" for t in THRESHOLDS_KM]
        rows.append(f"| {name} | " + " | ".join(cells) + " |")
    return head + "\n\n" + "\n".join(rows)


def write_guesses(path: Path, keys: list[str], *, ranking: Ranking) -> None:
    """key, lon, lat (true, NaN when unknown), lon_r / lat_r / score_r for r = 1..k, error_km (top 1); temp name then rename."""
    import pyarrow as pa
    import pyarrow.csv as pacsv

    columns: dict[str, object] = {"key": keys, "lon": ranking.truth[:, 0].numpy(), "lat": ranking.truth[:, 1].numpy()}
    for r in range(ranking.scores.shape[1]):
        columns[f"lon_{r + 1}"] = ranking.lonlat[:, r, 0].numpy()
        columns[f"lat_{r + 1}"] = ranking.lonlat[:, r, 1].numpy()
        columns[f"score_{r + 1}"] = ranking.scores[:, r].numpy()
    columns["error_km"] = ranking.errors_km().numpy()
    with written_whole(path) as partial:
        pacsv.write_csv(pa.table(columns), partial)


def read_image_embeddings(path: Path) -> tuple[list[str], torch.Tensor, torch.Tensor]:
    """(keys, lonlat, embeddings) from a ``satclip embed-images`` Parquet / CSV output."""
    from ..tables import read_table

    table = read_table(path)
    emb_cols = [c for c in table.column_names if c.startswith("emb_")]
    missing = [c for c in ("key", "lon", "lat") if c not in table.column_names]
    if missing or not emb_cols:
        raise ValueError(f"--images {str(path)!r}: expected the columns of satclip embed-images (key, lon, lat, emb_*); missing {missing or ['emb_*']}")
    lonlat = np.stack([table.column(c).to_numpy(zero_copy_only=False).astype(np.float64) for c in ("lon", "lat")], axis=1)
    emb = np.stack([table.column(c).to_numpy(zero_copy_only=False) for c in emb_cols], axis=1).astype(np.float32)
    return [str(k) for k in table.column("key").to_pylist()], torch.from_numpy(lonlat), torch.from_numpy(emb)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from ..io.embed_images import add_image_arguments

    parser.add_argument("--images", required=True, help="shards, a GeoTIFF folder, or the .parquet/.csv output of satclip embed-images")
    parser.add_argument("--gallery", default="grid:1", help="grid:RES, grid:RES:land, or a CSV/Parquet/NPY of candidate points (default grid:1)")
    parser.add_argument(
        "--max-gallery", type=float, default=MAX_GALLERY, help=f"refuse a grid:RES gallery of more places than this (default {MAX_GALLERY:.0e})"
    )
    parser.add_argument("--top-k", type=int, default=5, help="guesses kept per image (default 5)")
    add_output_arguments(parser, help="guesses .csv (a <name>.summary.json is written beside it)")
    parser.add_argument("--lon-col", default="lon", help="longitude column of a points gallery")
    parser.add_argument("--lat-col", default="lat", help="latitude column of a points gallery")
    add_image_arguments(parser)


def run(args: argparse.Namespace) -> int:
    from ..data.errors import EmptyStreamError
    from ..io.embed_images import iter_image_embeddings, open_images, report_skips
    from ..io.models import create_model_and_transforms

    check_device(args.device)
    output = Path(args.out)
    if output.suffix.lower() != ".csv":
        raise ValueError(f"output {str(output)!r}: name it .csv")
    summary_path = output.with_name(output.stem + ".summary.json")
    refuse_existing(output, summary_path, overwrite=args.overwrite)
    skipped: dict[str, int] = {}
    gallery = Gallery.parse(args.gallery, lon_col=args.lon_col, lat_col=args.lat_col, max_places=args.max_gallery)
    try:
        model, preprocess = create_model_and_transforms(args.checkpoint, device=args.device, crop_size=args.crop_size)
        inputs = preprocess.inputs
        images = Path(args.images)
        if images.is_file() and images.suffix.lower() in (".parquet", ".csv"):
            keys, truth, emb = read_image_embeddings(images)
        else:
            stream = open_images(images, inputs, batch_size=args.batch_size)
            batches = list(iter_image_embeddings(model, stream, device=args.device, progress=not args.no_progress, skipped=skipped))
            keys = [k for b in batches for k in b.keys]
            truth = torch.from_numpy(np.concatenate([b.lonlat for b in batches]))
            emb = torch.from_numpy(np.concatenate([b.embedding for b in batches]))
        ranking = rank_gallery(emb, truth, encoder=model.location, gallery=gallery, top_k=args.top_k, device=args.device, progress=not args.no_progress)
    except EmptyStreamError as err:
        raise SystemExit(f"satclip locate: {err}") from None
    summary = summarise(ranking)
    write_guesses(output, keys, ranking=ranking)
    record = {"checkpoint": str(args.checkpoint), "images": str(args.images), "gallery_spec": args.gallery, **summary, "skipped": skipped}
    with written_whole(summary_path) as partial:
        partial.write_text(json.dumps(record, indent=2) + "\n")
    print(summary_text(summary) + f"\n\nwrote {output} and {summary_path}{report_skips(skipped)}")
    return 0


__all__ = ["THRESHOLDS_KM", "Gallery", "Ranking", "rank_gallery", "summarise", "summary_text"]
