#!/usr/bin/env python
"""End-to-end evidence that pretraining learns geography, on CPU in a few minutes.

1. A synthetic world: Sentinel-2-shaped patches (12 bands, uint16 reflectance x 10000, 64 px)
   whose band means are a known function of location (land/ocean from the 1 km land mask, a
   latitude "climate" gradient, three random fields; see
   :class:`satclip.testing.worlds.SyntheticWorld`) plus texture and noise, at points uniform on
   the sphere, written as GeoTIFFs with an index and turned into shards by ``satclip shards``.
   By default the random fields have fine detail (degree < 24, spectral decay 0.5: about 30% of
   their variance is within reach of L=10 harmonics); ``--field-degree 14 --field-decay 1``
   gives the smooth fields (about 80%).
2. Pretraining through the real loader, loss and trainer (``satclip fit`` with a generated
   config: ResNet-18 image tower on 32 px crops, Siren(SH) L=10 location tower, 64-d embeddings,
   batch 128) for ``--max-steps`` steps or ``--minutes``, whichever ends first.
3. Probes on held-out locations (never in the shards): land/ocean (accuracy), the climate
   gradient and two random fields (R^2); ``--probe ridge`` (RidgeClassifierCV / RidgeCV) or
   ``mlp``; 5-fold random and spatial CV, with a learning curve: the probe sees ``--labels``
   labelled points of the training folds (and then all of them). Pretrained location embeddings
   vs the same tower with its initial weights, raw lon/lat and untrained SH at L=10, at L=40 (1600
   features: with more labels than that, ridge fits the noiseless synthetic fields exactly), at the
   tower's L and at the embedding's dimension (L=8 for 64-d). The report opens with the verdict:
   pretrained minus the best baseline for every (target, CV, labels), called win / tie / loss.

4. Image -> location retrieval of ``--n-retrieval`` held-out patches (new locations) among their
   locations: top-1 / top-5 and the median great-circle error of the top-1, next to chance.

6. With ``--prefix-dims 16 32``: the same probes on the leading 16 and 32 dimensions of the
   pretrained embeddings (what ``load_location_encoder(..., dim=16)`` gives), next to all of them;
   for Matryoshka training (``--fit-arg model.matryoshka_dims=[16,32,64]``), see docs/matryoshka.md.
5. ``--seasonal AMP``: band means also depend on the acquisition time (a term AMP x a per-band
   weight x sign(lat) sin(2 pi phi), phi the fraction of the year: opposite seasons in the two
   hemispheres), patches carry random times 2018-2023 (shard records' ``"time"``), and a seasonal
   section probes sign(lat) sin(2 pi phi) at held-out (place, time) pairs. ``--time-tower`` trains
   the time-aware tower (``sphericalharmonics_time``: SH x ``--time-harmonics`` Fourier orders,
   ``--time-dropout``) instead of the static Siren(SH); its static probes above use unknown time.

``--recipe NAME`` trains with the overlay ``configs/recipes/NAME.yaml`` (``cool``: the recommended
recipe), ``--fit-arg model.KEY=VALUE`` with any other option.

Usage: ``python scripts/bench_pretrain_quality.py --out /tmp/bench-quality [--recipe cool] [--probe mlp]``
(about 6 minutes on 2 free cores: data 45 s, 800 steps 3 min, probes 2.5 min); ``--checkpoint CKPT``
probes a checkpoint only (give the world options it was trained with). Writes
``OUT/report-<probe>.md`` (also printed) and keeps shards and checkpoint in ``OUT``.
"""

from __future__ import annotations

import argparse
import csv
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from satclip.testing.worlds import SyntheticWorld

ROOT = Path(__file__).resolve().parents[1]


def make_patches(means: np.ndarray, size: int, rng: np.random.Generator) -> np.ndarray:
    """(N, C, size, size) uint16: each band's mean times a smooth texture, plus sensor noise."""
    n, c = means.shape
    coarse = rng.normal(0.0, 0.08, (n, 1, size // 8, size // 8))
    texture = 1.0 + np.kron(coarse, np.ones((1, 1, 8, 8)))
    noise = rng.normal(0.0, 40.0, (n, c, size, size))
    return np.clip(means[:, :, None, None] * texture + noise, 1, 10000).astype(np.uint16)


def write_world(folder: Path, lonlat: np.ndarray, images: np.ndarray, times: np.ndarray | None = None) -> None:
    """An S2-100K-style folder: ``index.csv`` (fn, lon, lat[, time]: Unix seconds as ISO 8601 UTC, read
    by ``satclip shards`` into the records) and ``images/patch_N.tif`` (EPSG:4326, ~10 m pixels)."""
    import rasterio
    from rasterio.transform import from_origin

    from satclip.acqtime import iso_utc

    (folder / "images").mkdir(parents=True, exist_ok=True)
    res = 1e-4
    with (folder / "index.csv").open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["fn", "lon", "lat"] + (["time"] if times is not None else []))
        for i, ((lon, lat), image) in enumerate(zip(lonlat, images)):
            fn = f"patch_{i}.tif"
            c, h, w = image.shape
            transform = from_origin(lon - w * res / 2, lat + h * res / 2, res, res)
            with rasterio.open(
                folder / "images" / fn, "w", driver="GTiff", width=w, height=h, count=c, dtype="uint16", crs="EPSG:4326", transform=transform
            ) as dst:
                dst.write(image)
            writer.writerow([fn, repr(float(lon)), repr(float(lat))] + ([iso_utc(float(times[i]))] if times is not None else []))


def build_data(out: Path, n_train: int, n_val: int, size: int, seed: int, world: SyntheticWorld, seasonal: bool = False) -> tuple[Path, Path]:
    """Write the synthetic world's training and validation shards (with acquisition times when
    ``seasonal``); return their folders."""
    from satclip.data.shards import write_shards
    from satclip.eval.points import uniform_sphere
    from satclip.testing.worlds import uniform_times

    rng = np.random.default_rng(seed)
    dirs = []
    for name, n, s in (("train", n_train, seed + 10), ("val", n_val, seed + 11)):
        lonlat = uniform_sphere(n, s)
        times = uniform_times(n, s + 100) if seasonal else None
        images = make_patches(world.band_means(world.fields(lonlat, times)), size, rng)
        write_world(out / f"world-{name}", lonlat, images, times)
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
  embed_dim: {embed_dim}
  vision: resnet18
  in_chans: 13
  location: {location}
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
geography:
  tables: {geography}
"""


def geography_tables(out: Path, world: SyntheticWorld, seed: int, n: int = 2000) -> str:
    """The world's four targets at ``n`` locations that are in no shard, as the CSV tables that
    ``satclip fit`` probes at every validation (``geography.tables``, flow-style YAML)."""
    from satclip.eval.points import uniform_sphere

    lonlat = uniform_sphere(n, seed + 13)
    fields = world.fields(lonlat)
    tables = []
    for target, task in TARGETS:
        path = out / f"geo-{target}.csv"
        values = fields[target].astype(int) if task == "classification" else fields[target]
        np.savetxt(path, np.column_stack([lonlat, values]), delimiter=",", header="lon,lat,y", comments="", fmt="%.6f")
        tables.append(f"{{path: {path}, target: y, task: {task}, name: {target}}}")
    return "[" + ", ".join(tables) + "]"


def location_config(args: argparse.Namespace) -> str:
    """The location tower of CONFIG (flow-style YAML): Siren(SH), or with ``--time-tower`` Siren(SH x time)."""
    if args.time_tower:
        return (
            f"{{pe: sphericalharmonics_time, nn: siren, legendre_polys: {args.legendre_polys}, "
            f"time_harmonics: {args.time_harmonics}, time_dropout: {args.time_dropout}}}"
        )
    return f"{{pe: sphericalharmonics, nn: siren, legendre_polys: {args.legendre_polys}}}"


def pretrain(out: Path, train: Path, val: Path, args: argparse.Namespace, world: SyntheticWorld) -> Path:
    """Run ``satclip fit`` on the shards for ``args.minutes`` (or ``args.max_steps``); return the last checkpoint."""
    config = out / "config.yaml"
    config.write_text(
        CONFIG.format(
            seed=args.seed,
            minutes=args.minutes,
            max_steps=args.max_steps,
            out=out / "fit",
            crop=args.crop,
            train=train,
            val=val,
            batch_size=args.batch_size,
            embed_dim=args.embed_dim,
            location=location_config(args),
            geography=geography_tables(out, world, args.seed),
        )
    )
    env = dict(os.environ, WANDB_MODE="offline", OMP_NUM_THREADS="2")
    cmd = [sys.executable, "-m", "satclip.cli", "fit", "--config", str(config)]
    cmd += ["--config", str(ROOT / "configs" / "recipes" / f"{args.recipe}.yaml")]  # new runs default to cool: always name it
    for item in args.fit_arg:
        key, _, value = item.partition("=")
        cmd += [f"--{key}", value]
    subprocess.run(cmd, check=True, env=env, cwd=ROOT)
    ckpts = sorted((out / "fit").rglob("*-last.ckpt"), key=lambda p: p.stat().st_mtime)
    if not ckpts:
        raise FileNotFoundError(f"satclip fit wrote no checkpoint under {out / 'fit'}")
    return ckpts[-1]


RECIPES = tuple(sorted(p.stem for p in (ROOT / "configs" / "recipes").glob("*.yaml")))
TARGETS = (("land", "classification"), ("climate", "regression"), ("field_0", "regression"), ("field_1", "regression"))
PRETRAINED = "pretrained tower"


def feature_sets(checkpoint: Path, lonlat: np.ndarray, seed: int, sh_degrees: tuple[int, ...] = (10, 40)) -> tuple[dict[str, np.ndarray], str]:
    """The pretrained location embeddings and the baselines at the probe locations, and the tower in words.

    Baselines: the same tower with its initial weights, raw lon/lat, and untrained spherical
    harmonics at each L of ``sh_degrees``, at the tower's own L (its input features) and with
    about as many features as the embedding (equal dimensionality). SH L=40 is 1600 features: a
    ridge probe fits any field of degree < 40 exactly once it has more labels than that.
    """
    import torch

    from satclip import load_location_encoder
    from satclip.io.embed import embed_array
    from satclip.location import build_location_encoder, spherical_harmonics

    trained = load_location_encoder(str(checkpoint))
    torch.manual_seed(seed)
    cfg = trained.config
    untrained = build_location_encoder(
        cfg["pe"], cfg["nn"], output_dim=trained.output_dim, **{k: v for k, v in cfg.items() if k not in ("pe", "nn", "output_dim")}
    )
    l_tower = int(cfg.get("legendre_polys", 10))
    features = {
        PRETRAINED: embed_array(trained, lonlat, dtype=np.float64),
        "same tower, untrained": embed_array(untrained, lonlat, dtype=np.float64),
        "lon/lat": lonlat.copy(),
    }
    coords = torch.as_tensor(lonlat, dtype=torch.float64)
    for degree in sorted({*sh_degrees, l_tower, int(trained.output_dim**0.5)}):
        features[f"SH L={degree} ({degree * degree} features)"] = spherical_harmonics(coords, degree).numpy()
    return features, f"{cfg['pe']} L={l_tower} + {cfg['nn']}, {trained.output_dim}-d embeddings"


def learning_curve(
    features: dict[str, np.ndarray], lonlat: np.ndarray, y: np.ndarray, task: str, probe: str, labels: list[int], seed: int
) -> dict[tuple[str, str, str], np.ndarray]:
    """Per-fold probe scores keyed by (features, cv, labels): 5-fold random and spatial CV, where the
    probe sees ``n`` labelled points drawn from the training folds (or all of them) and is scored on
    the held-out fold. Every feature set gets the same folds and the same labelled points."""
    from satclip.eval.probe import fold_indices, make_probe, score

    metric = "r2" if task == "regression" else "accuracy"
    rng = np.random.default_rng(seed)
    out: dict[tuple[str, str, str], list[float]] = {}
    for cv in ("random", "spatial"):
        for train_idx, test_idx in fold_indices(lonlat, 5, cv=cv, seed=seed, cell_deg=10.0):
            for n in [*labels, None]:
                idx = train_idx if n is None or n >= len(train_idx) else rng.choice(train_idx, n, replace=False)
                for name, x in features.items():
                    model = make_probe(probe, task, seed=seed).fit(x[idx], y[idx])
                    key = (name, cv, "all" if n is None else str(n))
                    out.setdefault(key, []).append(score(task, y[test_idx], y_pred=model.predict(x[test_idx]))[metric])
    return {k: np.array(v) for k, v in out.items()}


def curve_table(scores: dict[tuple[str, str, str], np.ndarray]) -> str:
    """Markdown: one row per feature set, one column per (cv, labels): mean over the 5 folds."""
    names = list(dict.fromkeys(k[0] for k in scores))
    cols = list(dict.fromkeys(k[1:] for k in scores))
    lines = ["| features | " + " | ".join(f"{cv} n={n}" for cv, n in cols) + " |", "|---|" + "---|" * len(cols)]
    for name in names:
        best = [max(scores[(m, *c)].mean() for m in names) for c in cols]
        cells = [f"**{v:.3f}**" if v >= b - 1e-9 else f"{v:.3f}" for v, b in ((scores[(name, *c)].mean(), b) for c, b in zip(cols, best))]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def verdict(results: dict[str, dict[tuple[str, str, str], np.ndarray]], tie: float = 0.01) -> tuple[str, str]:
    """Markdown: pretrained minus the best baseline per (target, cv, labels), called a win / loss when
    the gap exceeds ``tie`` (absolute accuracy or R²), else a tie; and the same in words, per target."""
    counts = {"win": 0, "tie": 0, "loss": 0}
    words = []
    first = next(iter(results.values()))
    cols = list(dict.fromkeys(k[1:] for k in first))
    lines = ["| target | " + " | ".join(f"{cv} n={n}" for cv, n in cols) + " |", "|---|" + "---|" * len(cols)]
    for target, scores in results.items():
        cells, calls = [], {"win": [], "tie": [], "loss": []}
        for c in cols:
            base = {k[0]: v.mean() for k, v in scores.items() if k[1:] == c and k[0] != PRETRAINED}
            best = max(base, key=base.get)
            gap = scores[(PRETRAINED, *c)].mean() - base[best]
            call = "win" if gap > tie else "loss" if gap < -tie else "tie"
            counts[call] += 1
            calls[call].append(f"{c[0]} n={c[1]}")
            cells.append(f"{call} {gap:+.3f} vs {best.split(' (')[0]}")
        lines.append(f"| {target} | " + " | ".join(cells) + " |")
        said = [f"{how} at {', '.join(calls[call])}" for call, how in (("win", "WINS"), ("tie", "ties"), ("loss", "LOSES")) if calls[call]]
        words.append(f"- {target}: pretraining " + "; ".join(said))
    head = f"wins {counts['win']}, ties {counts['tie']}, losses {counts['loss']} (tie: |gap| <= {tie:g})\n\n"
    return "\n".join(lines), head + "\n".join(words)


def prefix_report(checkpoint: Path, world: SyntheticWorld, n_heldout: int, seed: int, probe: str, labels: tuple[int, ...], dims: tuple[int, ...]) -> str:
    """Markdown: the same probes on the leading ``dims`` dimensions of the pretrained embeddings (what
    ``load_location_encoder(..., dim=d)`` returns), next to the full embedding; same points and folds as
    :func:`probe_report`. Per target a learning-curve table, then the mean over its (cv, labels) cells."""
    from satclip import load_location_encoder
    from satclip.eval.points import uniform_sphere
    from satclip.io.embed import embed_array

    lonlat = uniform_sphere(n_heldout, seed + 12)
    fields = world.fields(lonlat)
    tower = load_location_encoder(str(checkpoint))
    full = embed_array(tower, lonlat, dtype=np.float64)
    bad = [d for d in dims if not 0 < d < full.shape[1]]
    if bad:
        raise ValueError(f"--prefix-dims must be between 1 and {full.shape[1] - 1} (the embedding has {full.shape[1]}); got {bad}")
    names = {d: f"first {d} dims" for d in sorted(dims)}
    features = {**{names[d]: full[:, :d] for d in names}, f"all {full.shape[1]} dims": full}
    parts, means = [], {}
    for target, task in TARGETS:
        y = fields[target] if task == "regression" else fields[target].astype(int)
        scores = learning_curve(features, lonlat, y, task, probe, list(labels), seed)
        means[target] = {name: np.mean([v.mean() for k, v in scores.items() if k[0] == name]) for name in features}
        metric = "R²" if task == "regression" else "accuracy"
        parts.append(f"### prefixes, {target}: {metric}, {probe} probe (best in bold)\n\n{curve_table(scores)}\n")
    trained = getattr(tower, "matryoshka_dims", None)
    lines = [
        "\n## Embedding prefixes: the leading dimensions of the pretrained tower\n",
        f"training prefixes (matryoshka_dims): {trained or 'none (standard training)'}\n",
        "mean over the (cv, labels) cells of each target:\n",
        "| prefix | " + " | ".join(t for t, _ in TARGETS) + " |",
        "|---|" + "---|" * len(TARGETS),
    ]
    lines += [f"| {name} | " + " | ".join(f"{means[t][name]:.3f}" for t, _ in TARGETS) + " |" for name in features]
    return "\n".join([*lines, "", *parts])


def retrieval_report(checkpoint: Path, world: SyntheticWorld, n: int, size: int, crop_px: int, seed: int, seasonal: bool = False) -> str:
    """Markdown: image -> location retrieval over ``n`` held-out patches (new locations, new patches;
    with ``seasonal`` at random times, given to a time-aware tower), ranked among the location
    embeddings of the same ``n`` locations, with chance level."""
    import torch

    from satclip import create_model_and_transforms
    from satclip.eval.points import uniform_sphere
    from satclip.testing.worlds import uniform_times
    from satclip.train.retrieval import retrieval_metrics

    lonlat = uniform_sphere(n, seed + 13)
    times = uniform_times(n, seed + 113) if seasonal else None
    images = make_patches(world.band_means(world.fields(lonlat, times)), size, np.random.default_rng(seed + 14))
    model, preprocess = create_model_and_transforms(checkpoint, crop_size=crop_px)  # the 13-band tower of CONFIG, centre crop
    with torch.no_grad():
        img = torch.nn.functional.normalize(model.encode_image(preprocess(images)).float(), dim=-1)
        when = None if times is None else torch.from_numpy(times)
        loc = torch.nn.functional.normalize(model.encode_location(torch.from_numpy(lonlat), when).float(), dim=-1)
    coords = torch.from_numpy(lonlat)
    got = retrieval_metrics(img, loc, lonlat=coords)
    chance = retrieval_metrics(img, loc[torch.randperm(n, generator=torch.Generator().manual_seed(seed))], lonlat=coords)
    rows = [("pretrained", got), ("chance (locations shuffled)", {**chance, "top1": 1 / n, "top5": min(5, n) / n})]
    lines = [
        f"\n## Image -> location retrieval: {n} held-out patches among their {n} locations\n",
        "| model | top-1 | top-5 | median error (km) |",
        "|---|---|---|---|",
    ]
    lines += [f"| {name} | {m['top1']:.3f} | {m['top5']:.3f} | {m['median_km']:.0f} |" for name, m in rows]
    return "\n".join(lines) + "\n"


def probe_report(
    checkpoint: Path,
    world: SyntheticWorld,
    n_heldout: int,
    seed: int,
    probe: str = "ridge",
    labels: tuple[int, ...] = (50, 200, 1000),
    sh_degrees: tuple[int, ...] = (10, 40),
) -> str:
    """Learning-curve probe tables (markdown) and the win/tie/loss verdict on held-out locations."""
    from satclip.eval.points import uniform_sphere

    lonlat = uniform_sphere(n_heldout, seed + 12)
    fields = world.fields(lonlat)
    features, tower = feature_sets(checkpoint, lonlat, seed, sh_degrees)
    results, parts = {}, []
    for target, task in TARGETS:
        y = fields[target] if task == "regression" else fields[target].astype(int)
        results[target] = learning_curve(features, lonlat, y, task, probe, list(labels), seed)
        metric = "R²" if task == "regression" else "accuracy"
        parts.append(f"### {target}: {metric}, {probe} probe (best in bold)\n\n{curve_table(results[target])}\n")
    table, words = verdict(results)
    summary = f"## Verdict: pretrained tower minus the best baseline\n\n{words}\n\n{table}\n"
    intro = (
        f"{n_heldout} held-out locations (never in the shards), uniform on the sphere; 5-fold random CV and "
        "spatial CV (10-degree cells); the probe is fit on n labelled points drawn from the training folds "
        "(n=all: every one of them) and scored on the held-out fold; mean over folds; inputs standardised.\n"
    )
    return "\n".join([f"tower: {tower}\n", summary, intro, *parts])


def seasonal_report(checkpoint: Path, n_heldout: int, seed: int, probe: str = "ridge", labels: tuple[int, ...] = (50, 200, 1000)) -> str:
    """Markdown: the seasonal signal sign(lat) sin(2 pi phi) probed at held-out (place, time) pairs.

    The pretrained tower gets [lon, lat, t] when it is time-aware ([lon, lat] otherwise); baselines:
    the same tower untrained, raw [lon, lat], [lon, lat, cos 2 pi phi, sin 2 pi phi] (time
    concatenated), SH L=10, and the untrained product encoding SH L=10 x Fourier K=1 (its features
    hold sign(lat)-like harmonics times sin 2 pi phi, so a linear probe nearly fits the target)."""
    import torch

    from satclip import load_location_encoder
    from satclip.acqtime import year_phase
    from satclip.eval.points import uniform_sphere
    from satclip.io.embed import embed_array
    from satclip.location import SphericalHarmonicsTime, build_location_encoder, spherical_harmonics
    from satclip.testing.worlds import seasonal_signal, uniform_times

    lonlat = uniform_sphere(n_heldout, seed + 15)
    times = uniform_times(n_heldout, seed + 16)
    y = seasonal_signal(lonlat, times)
    with_time = np.concatenate([lonlat, times[:, None]], axis=1)
    trained = load_location_encoder(str(checkpoint))
    cfg = trained.config
    torch.manual_seed(seed)
    untrained = build_location_encoder(
        cfg["pe"], cfg["nn"], output_dim=trained.output_dim, **{k: v for k, v in cfg.items() if k not in ("pe", "nn", "output_dim")}
    )
    tower_input = with_time if trained.takes_time else lonlat
    phase = 2 * np.pi * year_phase(times)
    product = SphericalHarmonicsTime(10, time_harmonics=1, time_dropout=0.0).eval()
    features = {
        PRETRAINED: embed_array(trained, tower_input, dtype=np.float64),
        "same tower, untrained": embed_array(untrained, tower_input, dtype=np.float64),
        "lon/lat": lonlat.copy(),
        "lon/lat + cos/sin of the year phase (concatenated)": np.concatenate([lonlat, np.cos(phase)[:, None], np.sin(phase)[:, None]], axis=1),
        "SH L=10 (100 features)": spherical_harmonics(torch.as_tensor(lonlat, dtype=torch.float64), 10).numpy(),
        "SH L=10 x Fourier K=1, untrained (300 features)": product(torch.as_tensor(with_time)).numpy(),
    }
    scores = learning_curve(features, lonlat, y, "regression", probe, list(labels), seed)
    got = {cv: scores[(PRETRAINED, cv, "all")].mean() for cv in ("random", "spatial")}
    which = "time-aware (given t)" if trained.takes_time else "static (no t)"
    return (
        f"\n## Seasonal target: sign(lat) sin(2 pi phi) at {n_heldout} held-out (place, time) pairs\n\n"
        f"pretrained tower ({which}): R² {got['random']:.3f} (random CV), {got['spatial']:.3f} (spatial CV), all labels\n\n"
        f"### seasonal: R², {probe} probe (best in bold)\n\n{curve_table(scores)}\n"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("/tmp/satclip-bench-quality"))
    parser.add_argument("--n-train", type=int, default=6000, help="training patches")
    parser.add_argument("--n-val", type=int, default=256, help="validation patches")
    parser.add_argument("--n-heldout", type=int, default=3000, help="held-out probe locations")
    parser.add_argument("--n-retrieval", type=int, default=1000, help="held-out patches for image -> location retrieval")
    parser.add_argument(
        "--labels",
        type=int,
        nargs="+",
        default=[50, 200, 1000],
        help="labelled points per probe fit (learning curve; all training-fold points are always added)",
    )
    parser.add_argument("--legendre-polys", type=int, default=10, help="L of the Siren(SH) location tower")
    parser.add_argument("--embed-dim", type=int, default=64)
    parser.add_argument(
        "--baseline-sh", type=int, nargs="+", default=[10, 40], help="L of the untrained SH baselines (the tower's L and the embedding's size are added)"
    )
    parser.add_argument("--field-degree", type=int, default=24, help="random fields: highest degree + 1")
    parser.add_argument("--field-decay", type=float, default=0.5, help="random fields: harmonic of degree l has std 1/(l+1)^decay (0: fine detail, 1: smooth)")
    parser.add_argument("--size", type=int, default=64, help="patch size in pixels")
    parser.add_argument("--crop", type=int, default=32, help="random training crop (centre crop for validation)")
    parser.add_argument("--minutes", type=int, default=10, help="pretraining wall time (a cap; --max-steps may end it first)")
    parser.add_argument("--max-steps", type=int, default=800, help="step budget (the cosine schedule's length)")
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--recipe", default="released", choices=RECIPES, help="training recipe: the released one, or an overlay of configs/recipes/")
    parser.add_argument(
        "--fit-arg", action="append", default=[], metavar="KEY=VALUE", help="extra satclip fit option, e.g. model.logit_scale_init=3 (repeatable)"
    )
    parser.add_argument("--probe", default="ridge", choices=("ridge", "mlp"))
    parser.add_argument(
        "--prefix-dims", type=int, nargs="+", default=[], help="also probe these leading prefixes of the pretrained embeddings (e.g. 16 32 of 64)"
    )
    parser.add_argument(
        "--seasonal",
        type=float,
        default=0.0,
        metavar="AMP",
        help="band means get AMP x weight x sign(lat) sin(2 pi year phase); patches carry times; adds the seasonal probe",
    )
    parser.add_argument("--time-tower", action="store_true", help="train the time-aware tower (sphericalharmonics_time) instead of Siren(SH)")
    parser.add_argument("--time-harmonics", type=int, default=2, help="--time-tower: seasonal Fourier orders K")
    parser.add_argument("--time-dropout", type=float, default=0.1, help="--time-tower: fraction of training rows with time unknown")
    parser.add_argument("--reuse-data", action="store_true", help="keep the shards already in --out (same settings)")
    parser.add_argument("--checkpoint", type=Path, help="skip data and pretraining: probe this checkpoint")
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    timings = {}
    from satclip.testing.worlds import SyntheticWorld

    world = SyntheticWorld(seed=args.seed, field_degree=args.field_degree, field_decay=args.field_decay, seasonal=args.seasonal)
    seasonal = args.seasonal > 0
    checkpoint = args.checkpoint
    if checkpoint is None:
        start = time.perf_counter()
        train, val = args.out / "shards-train", args.out / "shards-val"
        if not (args.reuse_data and (train / "manifest.json").is_file() and (val / "manifest.json").is_file()):
            train, val = build_data(args.out, args.n_train, args.n_val, args.size, args.seed, world, seasonal)
            timings["data"] = time.perf_counter() - start
        start = time.perf_counter()
        checkpoint = pretrain(args.out, train, val, args, world)
        timings["pretraining"] = time.perf_counter() - start
    start = time.perf_counter()
    report = probe_report(checkpoint, world, args.n_heldout, args.seed, args.probe, tuple(args.labels), tuple(args.baseline_sh))
    if args.prefix_dims:
        report += prefix_report(checkpoint, world, args.n_heldout, args.seed, args.probe, tuple(args.labels), tuple(args.prefix_dims))
    report += "\n" + retrieval_report(checkpoint, world, args.n_retrieval, args.size, args.crop, args.seed, seasonal)
    if seasonal:
        report += seasonal_report(checkpoint, args.n_heldout, args.seed, args.probe, tuple(args.labels))
    timings["probes"] = time.perf_counter() - start
    trained = (
        ""
        if args.checkpoint
        else (
            f"recipe {args.recipe}{''.join(' --' + a for a in args.fit_arg)}; "
            f"{args.n_train} training patches of {args.size} px (crop {args.crop}), batch {args.batch_size}, "
            f"at most {args.max_steps} steps / {args.minutes} min of CPU pretraining; "
        )
    )
    world_text = (
        f"world: seed {args.seed}, random fields of degree < {args.field_degree}, decay {args.field_decay:g}"
        + (f", seasonal amplitude {args.seasonal:g}" if seasonal else "")
        + " "
        "(--checkpoint: these must match the world it was trained on)\n"
    )
    header = (
        f"# Pretraining quality (synthetic world)\n\ncheckpoint: {checkpoint}\n{world_text}{trained}"
        + ", ".join(f"{k} {v:.0f} s" for k, v in timings.items())
        + "\n\n"
    )
    (args.out / f"report-{args.probe}.md").write_text(header + report)
    print(header + report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
