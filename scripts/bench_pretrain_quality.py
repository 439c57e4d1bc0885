#!/usr/bin/env python
"""End-to-end evidence that pretraining learns geography, on CPU in a few minutes.

1. A synthetic world: Sentinel-2-shaped patches (12 bands, uint16 reflectance x 10000, 64 px)
   whose band means are a known function of location (land/ocean from the 1 km land mask, a
   latitude "climate" gradient, three smooth random fields; see
   :class:`satclip.eval.synthetic.SyntheticWorld`) plus texture and noise, at points uniform on
   the sphere, written as GeoTIFFs with an index and turned into shards by ``satclip shards``.
2. Pretraining through the real loader, loss and trainer (``satclip fit`` with a generated
   config: ResNet-18 image tower on 32 px crops, Siren(SH) L=10 location tower, 64-d embeddings,
   batch 128) for ``--max-steps`` steps or ``--minutes``, whichever ends first.
3. Probes on held-out locations (never in the shards): land/ocean (accuracy), the climate
   gradient and one random field (R^2); ``--probe ridge`` (RidgeClassifierCV / RidgeCV) or
   ``mlp``; 5-fold random and spatial CV; for the pretrained location embeddings vs raw lon/lat,
   untrained spherical harmonics (L=10) and the same location tower with its initial weights.

Usage: ``python scripts/bench_pretrain_quality.py --out /tmp/bench-quality [--probe mlp]``
(about 4 minutes on 2 free cores: data 50 s, 800 steps 3 min); ``--checkpoint CKPT`` probes a
checkpoint only. Writes ``OUT/report-<probe>.md`` (also printed) and keeps shards and checkpoint in ``OUT``.
"""

from __future__ import annotations

import argparse
import csv
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]


def make_patches(means: np.ndarray, size: int, rng: np.random.Generator) -> np.ndarray:
    """(N, C, size, size) uint16: each band's mean times a smooth texture, plus sensor noise."""
    n, c = means.shape
    coarse = rng.normal(0.0, 0.08, (n, 1, size // 8, size // 8))
    texture = 1.0 + np.kron(coarse, np.ones((1, 1, 8, 8)))
    noise = rng.normal(0.0, 40.0, (n, c, size, size))
    return np.clip(means[:, :, None, None] * texture + noise, 1, 10000).astype(np.uint16)


def write_world(folder: Path, lonlat: np.ndarray, images: np.ndarray) -> None:
    """An S2-100K-style folder: ``index.csv`` (fn, lon, lat) and ``images/patch_N.tif`` (EPSG:4326, ~10 m pixels)."""
    import rasterio
    from rasterio.transform import from_origin

    (folder / "images").mkdir(parents=True, exist_ok=True)
    res = 1e-4
    with (folder / "index.csv").open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["fn", "lon", "lat"])
        for i, ((lon, lat), image) in enumerate(zip(lonlat, images)):
            fn = f"patch_{i}.tif"
            c, h, w = image.shape
            transform = from_origin(lon - w * res / 2, lat + h * res / 2, res, res)
            with rasterio.open(folder / "images" / fn, "w", driver="GTiff", width=w, height=h, count=c, dtype="uint16",
                               crs="EPSG:4326", transform=transform) as dst:
                dst.write(image)
            writer.writerow([fn, repr(float(lon)), repr(float(lat))])


def build_data(out: Path, n_train: int, n_val: int, size: int, seed: int) -> tuple[Path, Path]:
    """Write the synthetic world's training and validation shards; return their folders."""
    from satclip.data.shards import write_shards
    from satclip.eval.synthetic import SyntheticWorld, uniform_sphere

    world = SyntheticWorld(seed=seed)
    rng = np.random.default_rng(seed)
    dirs = []
    for name, n, s in (("train", n_train, seed + 10), ("val", n_val, seed + 11)):
        lonlat = uniform_sphere(n, s)
        images = make_patches(world.band_means(world.fields(lonlat)), size, rng)
        write_world(out / f"world-{name}", lonlat, images)
        write_shards([out / f"world-{name}"], out / f"shards-{name}", samples_per_shard=1000, overwrite=True, progress=False)
        dirs.append(out / f"shards-{name}")
    return dirs[0], dirs[1]


CONFIG = """\
seed_everything: {seed}
trainer:
  accelerator: cpu
  devices: 1
  max_time: "00:00:{minutes:02d}:00"
  max_steps: {max_steps}
  log_every_n_steps: 10
  limit_val_batches: 2
  default_root_dir: {out}
  enable_progress_bar: false
model:
  variant: bench-quality
  embed_dim: 64
  vision: resnet18
  in_chans: 13
  location: {{pe: sphericalharmonics, nn: siren, legendre_polys: 10}}
  location_dtype: float32
  lr: 0.001
  weight_decay: 0.01
  warmup_steps: 20
  max_steps: {max_steps}
data:
  train_urls: {train}
  val_urls: {val}
  batch_size: {batch_size}
  num_workers: 1
  crop_size: {crop}
  jitter: 0.01
checkpoint:
  every_n_train_steps: 0
"""


def pretrain(out: Path, train: Path, val: Path, crop: int, minutes: int, seed: int, max_steps: int, batch_size: int) -> Path:
    """Run ``satclip fit`` on the shards for ``minutes`` (or ``max_steps``); return the last checkpoint."""
    config = out / "config.yaml"
    config.write_text(CONFIG.format(seed=seed, minutes=minutes, max_steps=max_steps, out=out / "fit", crop=crop,
                                    train=train, val=val, batch_size=batch_size))
    env = dict(os.environ, WANDB_MODE="offline", OMP_NUM_THREADS="2")
    cmd = [sys.executable, "-m", "satclip.cli", "fit", "--config", str(config)]
    subprocess.run(cmd, check=True, env=env, cwd=ROOT)
    ckpts = sorted((out / "fit").rglob("*-last.ckpt"), key=lambda p: p.stat().st_mtime)
    if not ckpts:
        raise FileNotFoundError(f"satclip fit wrote no checkpoint under {out / 'fit'}")
    return ckpts[-1]


def probe_report(checkpoint: Path, n_heldout: int, seed: int, probe: str = "ridge") -> str:
    """Probe tables (markdown) for land/ocean, climate and field_0 on held-out locations."""
    import torch

    from satclip import load_location_encoder
    from satclip.eval.probe import baseline_features, embed, run_probe, summary_table
    from satclip.eval.synthetic import SyntheticWorld, uniform_sphere
    from satclip.location import build_location_encoder

    world = SyntheticWorld(seed=seed)
    lonlat = uniform_sphere(n_heldout, seed + 12)
    fields = world.fields(lonlat)
    trained = load_location_encoder(str(checkpoint))
    torch.manual_seed(seed)
    untrained = build_location_encoder(trained.config["pe"], trained.config["nn"], output_dim=trained.output_dim,
                                       **{k: v for k, v in trained.config.items() if k not in ("pe", "nn", "output_dim")})
    base = baseline_features(lonlat)
    features = {"pretrained tower": embed(trained, lonlat), "same tower, untrained": embed(untrained, lonlat),
                "lon/lat": base["lon/lat"], "SH L=10 (untrained)": base["SH L=10 (untrained)"]}
    parts = []
    for target, task in (("land", "classification"), ("climate", "regression"), ("field_0", "regression")):
        y = fields[target] if task == "regression" else fields[target].astype(int)
        rows = run_probe(features, lonlat, y, task=task, kind=probe, cvs=["random", "spatial"], n_folds=5, seed=seed)
        parts.append(f"### {target} ({task}), {probe} probe, {n_heldout} held-out locations\n\n{summary_table(rows, task)}\n")
    return "\n".join(parts)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("/tmp/satclip-bench-quality"))
    parser.add_argument("--n-train", type=int, default=6000, help="training patches")
    parser.add_argument("--n-val", type=int, default=256, help="validation patches")
    parser.add_argument("--n-heldout", type=int, default=2000, help="held-out probe locations")
    parser.add_argument("--size", type=int, default=64, help="patch size in pixels")
    parser.add_argument("--crop", type=int, default=32, help="random training crop (centre crop for validation)")
    parser.add_argument("--minutes", type=int, default=10, help="pretraining wall time (a cap; --max-steps may end it first)")
    parser.add_argument("--max-steps", type=int, default=800, help="step budget (the cosine schedule's length)")
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--probe", default="ridge", choices=("ridge", "mlp"))
    parser.add_argument("--reuse-data", action="store_true", help="keep the shards already in --out (same settings)")
    parser.add_argument("--checkpoint", type=Path, help="skip data and pretraining: probe this checkpoint")
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    timings = {}
    checkpoint = args.checkpoint
    if checkpoint is None:
        start = time.perf_counter()
        train, val = args.out / "shards-train", args.out / "shards-val"
        if not (args.reuse_data and (train / "manifest.json").is_file() and (val / "manifest.json").is_file()):
            train, val = build_data(args.out, args.n_train, args.n_val, args.size, args.seed)
            timings["data"] = time.perf_counter() - start
        start = time.perf_counter()
        checkpoint = pretrain(args.out, train, val, args.crop, args.minutes, args.seed, args.max_steps, args.batch_size)
        timings["pretraining"] = time.perf_counter() - start
    start = time.perf_counter()
    report = probe_report(checkpoint, args.n_heldout, args.seed, args.probe)
    timings["probes"] = time.perf_counter() - start
    trained = "" if args.checkpoint else (
        f"{args.n_train} training patches of {args.size} px (crop {args.crop}), batch {args.batch_size}, "
        f"at most {args.max_steps} steps / {args.minutes} min of CPU pretraining; ")
    header = (f"# Pretraining quality (synthetic world)\n\ncheckpoint: {checkpoint}\n{trained}"
              + ", ".join(f"{k} {v:.0f} s" for k, v in timings.items()) + "\n\n")
    (args.out / f"report-{args.probe}.md").write_text(header + report)
    print(header + report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
