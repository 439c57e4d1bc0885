"""``satclip plot-embeddings``: look at a location encoder; and maps of ``locfit`` predictions.

The embedding map shows the first three principal components of the embeddings over a regular
lon/lat grid as RGB (each component scaled between its 1st and 99th percentile), with a light
coastline traced from the 1 km land mask (``global-land-mask``, offline). ``--globe`` adds an
orthographic view computed with plain numpy (no cartopy): every globe pixel is embedded and
projected onto the same components, so both views share one colour scale.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch

from ..cliargs import add_output_arguments
from ..maps import PCAColours, lonlat_grid
from ..outputs import refuse_existing, written_whole

if TYPE_CHECKING:
    from ..location import LocationEncoder
    from .fitting import LocationPredictor, Split

MAP_SIZE_IN = (12.0, 6.0)
DPI = 100
FINEST_MAP_RESOLUTION = 0.25
"""The finest ``--resolution`` of a map (1200 px across 360 degrees: 0.3 degrees a pixel); the grid is embedded in memory."""


def _mesh(lon: np.ndarray, lat: np.ndarray) -> np.ndarray:
    lo, la = np.meshgrid(lon, lat)
    return np.stack([lo.ravel(), la.ravel()], axis=1)


def orthographic_lonlat(size: int, *, lon0: float, lat0: float) -> tuple[np.ndarray, np.ndarray]:
    """(size*size, 2) [lon, lat] seen at each pixel of an orthographic view centred on (lon0, lat0), and the disk mask."""
    v = np.linspace(1, -1, size)
    u = np.linspace(-1, 1, size)
    x, y = np.meshgrid(u, v)
    rho = np.hypot(x, y)
    inside = rho <= 1
    c = np.arcsin(np.clip(rho, 0, 1))
    phi0 = np.radians(lat0)
    with np.errstate(invalid="ignore", divide="ignore"):
        lat = np.arcsin(np.cos(c) * np.sin(phi0) + np.where(rho > 0, y * np.sin(c) * np.cos(phi0) / rho, 0))
        lon = np.radians(lon0) + np.arctan2(x * np.sin(c), rho * np.cos(c) * np.cos(phi0) - y * np.sin(c) * np.sin(phi0))
    lonlat = np.stack([(np.degrees(lon) + 180) % 360 - 180, np.degrees(lat)], axis=-1).reshape(-1, 2)
    return np.where(inside.reshape(-1, 1), lonlat, 0.0), inside


def land_mask(lonlat: np.ndarray) -> np.ndarray:
    from .points import is_land

    return is_land(lonlat).astype(np.float64)


def _coastline(ax, lon: np.ndarray, *, lat: np.ndarray, mask: np.ndarray, **kw) -> None:
    ax.contour(lon, lat, mask, levels=[0.5], colors="k", linewidths=0.4, alpha=0.6, **kw)


def plot_embedding_map(
    encoder: LocationEncoder,
    out: str | Path,
    *,
    title: str,
    resolution: float = 1.0,
    globe: bool = False,
    globe_center: tuple[float, float] = (10.0, 30.0),
    coastline: bool = True,
) -> Path:
    """Write a PNG (1200 x 600 px, 1800 x 600 with the globe) of the first three PCs of ``encoder``'s embeddings."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from ..io.embed import embed_array

    if resolution < FINEST_MAP_RESOLUTION:
        points_needed = (360 / resolution) * (180 / resolution)
        raise ValueError(
            f"--resolution {resolution:g}: the map is {int(MAP_SIZE_IN[0] * DPI)} px wide ({360 / (MAP_SIZE_IN[0] * DPI):.2g} degrees a pixel), so a grid finer "
            f"than {FINEST_MAP_RESOLUTION:g} degrees adds no detail, and this one would hold {points_needed:.3g} embeddings "
            f"({points_needed * encoder.output_dim * 8 / 1e9:,.3g} GB) in memory; use --resolution {FINEST_MAP_RESOLUTION:g} or coarser "
            "(satclip embed-grid writes fine grids tile by tile)"
        )
    lon, lat = lonlat_grid(resolution)
    points = _mesh(lon, lat)
    emb = embed_array(encoder, points, dtype=np.float64)
    colours = PCAColours(emb)
    image = colours(emb).reshape(len(lat), len(lon), 3)
    width = MAP_SIZE_IN[0] * (1.5 if globe else 1.0)
    fig = plt.figure(figsize=(width, MAP_SIZE_IN[1]), dpi=DPI)
    ax = fig.add_axes((0.02 / (width / 12), 0.08, 0.96 / (width / 12), 0.84))
    ax.imshow(image, extent=(-180, 180, -90, 90), origin="upper", interpolation="nearest")
    if coastline:
        _coastline(ax, lon, lat=lat, mask=land_mask(points).reshape(len(lat), len(lon)))
    ax.set_xlim(-180, 180)
    ax.set_ylim(-90, 90)
    ax.set_xticks(range(-180, 181, 60))
    ax.set_yticks(range(-90, 91, 30))
    ax.tick_params(labelsize=8)
    if globe:
        size = 400
        gpoints, inside = orthographic_lonlat(size, lon0=globe_center[0], lat0=globe_center[1])
        gimage = np.ones((size * size, 3))
        keep = inside.ravel()
        gimage[keep] = colours(embed_array(encoder, gpoints[keep], dtype=np.float64))
        gax = fig.add_axes((12.2 / width, 0.08, 5.6 / width, 0.84))
        gax.imshow(gimage.reshape(size, size, 3), interpolation="nearest")
        if coastline:
            gmask = np.full(size * size, np.nan)
            gmask[keep] = land_mask(gpoints[keep])
            _coastline(gax, np.arange(size), lat=np.arange(size), mask=gmask.reshape(size, size))
        gax.set_axis_off()
    fig.suptitle(title, fontsize=11)
    out = Path(out)
    with written_whole(out) as partial:
        fig.savefig(partial, dpi=DPI, format=out.suffix.lstrip(".").lower() or "png")
    plt.close(fig)
    return out


def plot_prediction(model: LocationPredictor, train: Split, *, out: str | Path, title: str, resolution: float = 1.0) -> Path:
    """Write a PNG of a fitted ``locfit`` model's field over the globe, with the training points on top.

    Binary classification shows P(second class), multi-class the predicted class, regression the value.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    lon, lat = lonlat_grid(resolution)
    points = _mesh(lon, lat)
    with torch.no_grad():
        model.eval()
        raw = model(torch.as_tensor(points, dtype=torch.float64)).double()
    if model.kind == "binary":
        field, cmap, label = torch.sigmoid(raw[:, 0]).numpy(), "RdBu_r", f"P({model.classes[1]})"
        point_values = (train.y == model.classes[1]).astype(float)
    elif model.kind == "multiclass":
        field, cmap, label = raw.argmax(1).numpy().astype(float), "tab20", "predicted class index"
        point_values = np.searchsorted(np.asarray(model.classes), train.y).astype(float)
    else:
        field, cmap, label = model.predict(points), "viridis", "prediction"
        point_values = train.y.astype(float)
    fig = plt.figure(figsize=MAP_SIZE_IN, dpi=DPI)
    ax = fig.add_axes((0.04, 0.08, 0.84, 0.84))
    vmin, vmax = float(np.nanmin(field)), float(np.nanmax(field))
    im = ax.imshow(field.reshape(len(lat), len(lon)), extent=(-180, 180, -90, 90), cmap=cmap, vmin=vmin, vmax=vmax, interpolation="nearest")
    _coastline(ax, lon, lat=lat, mask=land_mask(points).reshape(len(lat), len(lon)))
    show = np.random.default_rng(0).permutation(len(train.y))[:3000]
    ax.scatter(train.lonlat[show, 0], train.lonlat[show, 1], c=point_values[show], cmap=cmap, vmin=vmin, vmax=vmax, s=6, edgecolors="k", linewidths=0.2)
    ax.set_xlim(-180, 180)
    ax.set_ylim(-90, 90)
    fig.colorbar(im, cax=fig.add_axes((0.9, 0.15, 0.02, 0.7)), label=label)
    ax.set_title(title)
    out = Path(out)
    fig.savefig(out, dpi=DPI)
    plt.close(fig)
    return out


def model_title(source: str, encoder: torch.nn.Module) -> str:
    """ "name: pe x nn, L=.., dim d" from a checkpoint path / hub id and its tower's config."""
    cfg = getattr(encoder, "config", {}) or {}
    name = Path(source).name if Path(source).exists() else source
    parts = [f"{cfg.get('pe', '?')} x {cfg.get('nn', '?')}"]
    if "legendre_polys" in cfg:
        parts.append(f"L={cfg['legendre_polys']}")
    parts.append(f"{getattr(encoder, 'output_dim', '?')}-d")
    return f"{name}: {', '.join(parts)} (first 3 principal components as RGB)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--checkpoint", required=True, help="checkpoint file, hub id or exported location tower")
    add_output_arguments(parser, help="PNG to write (default: embeddings.png)", required=False, default="embeddings.png")
    parser.add_argument("--resolution", type=float, default=1.0, help="grid spacing in degrees (default 1.0)")
    parser.add_argument("--globe", action="store_true", help="add an orthographic globe view")
    parser.add_argument("--globe-center", type=float, nargs=2, default=(10.0, 30.0), metavar=("LON", "LAT"))
    parser.add_argument("--no-coastline", action="store_true", help="skip the coastline (saves loading the 1 km land mask)")


def run(args: argparse.Namespace) -> int:
    from .. import load_location_encoder

    refuse_existing(args.out, overwrite=args.overwrite)
    encoder = load_location_encoder(args.checkpoint)
    out = plot_embedding_map(
        encoder,
        args.out,
        title=model_title(args.checkpoint, encoder),
        resolution=args.resolution,
        globe=args.globe,
        globe_center=tuple(args.globe_center),
        coastline=not args.no_coastline,
    )
    print(out)
    return 0
