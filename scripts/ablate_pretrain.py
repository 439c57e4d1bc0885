#!/usr/bin/env python
"""Why pretraining lost the strongest signal: a fast stand-in of the synthetic benchmark for ablations.

The world, the location tower (Siren(SH) L=10, 64-d), the losses (``satclip.loss``) and the ridge
probes are those of ``scripts/bench_pretrain_quality.py``; the image tower is replaced by an MLP on
each patch's 12 band means (with the patch-level texture and sensor noise of the benchmark's
patches), so one 800-step run takes seconds instead of minutes. Each variant changes one thing of
the released recipe (learned temperature from 1/0.07, clamped at 100, InfoNCE, SIREN w0 = 30, one
learning rate, every negative kept); the table gives the probes on 3,000 held-out locations (random
5-fold CV, 50 and all labels) for the pretrained tower, and the untrained baselines once.

At scale: ``--batch-sizes 128 1024 8192 --steps 3200 800 200 --seeds 0 1 2`` gives one section per
batch size (each with at least 8 batches of distinct training locations), its rows the mean over the
seeds and a second table their standard deviation.

Usage: ``python scripts/ablate_pretrain.py [--seed 0] [--field-degree 24 --field-decay 0.5]
[--variants released "fixed 1 (cool)" ...] [--batch-sizes ...] [--steps ...] [--seeds ...]``
(about 1 minute per variant on one core at batch 128; 2.5 s a step at batch 8,192).
"""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench_pretrain_quality as bench  # noqa: E402

from satclip.eval.points import uniform_sphere  # noqa: E402
from satclip.io.embed import embed_array  # noqa: E402
from satclip.location import build_location_encoder, spherical_harmonics  # noqa: E402
from satclip.loss import LOSSES  # noqa: E402
from satclip.testing.worlds import SyntheticWorld  # noqa: E402
from satclip.train.recipes import batch_multiplier  # noqa: E402

RELEASED = {"loss": "infonce", "scale": 1 / 0.07, "learn": True, "max_scale": 100.0, "w0": 30.0, "location_lr": 1.0, "mask": False}
VARIANTS = {
    "released": {},
    "fixed 10": {"scale": 10.0, "learn": False},
    "fixed 5": {"scale": 5.0, "learn": False},
    "fixed 3": {"scale": 3.0, "learn": False},
    "fixed 2": {"scale": 2.0, "learn": False},
    "fixed 1 (cool)": {"scale": 1.0, "learn": False, "mask": True},
    "cool (ln B / ln 128)": {"scale": "batch", "learn": False, "mask": True},
    "learned from 1, at most 3": {"scale": 1.0, "max_scale": 3.0},
    "SigLIP (learned, from 10)": {"loss": "siglip", "scale": 10.0},
    "w0 = 10": {"w0": 10.0},
    "w0 = 3": {"w0": 3.0},
    "w0 = 1": {"w0": 1.0},
    "fixed 1, location lr x 3": {"scale": 1.0, "learn": False, "location_lr": 3.0},
    "fixed 1, w0 = 10": {"scale": 1.0, "learn": False, "w0": 10.0},
}


def train(world: SyntheticWorld, recipe: dict, seed: int, steps: int, batch: int, n_train: int, dim: int) -> tuple[nn.Module, float, float]:
    """Pretrain the location tower against the band-mean image tower; returns (tower, last loss, final multiplier)."""
    torch.manual_seed(seed)
    if recipe["scale"] == "batch":  # the cool recipe's rule for this batch (satclip.train.recipes)
        recipe = {**recipe, "scale": batch_multiplier(batch)}
    lonlat = torch.from_numpy(uniform_sphere(n_train, seed + 10))
    means = torch.from_numpy(world.band_means(world.fields(lonlat.numpy())) / 10000).float()
    image = nn.Sequential(nn.Linear(12, 256), nn.BatchNorm1d(256), nn.ReLU(), nn.Linear(256, 256), nn.BatchNorm1d(256), nn.ReLU(), nn.Linear(256, dim))
    tower = build_location_encoder("sphericalharmonics", "siren", output_dim=dim, dtype=torch.float32, legendre_polys=10, w0_initial=recipe["w0"])
    logit = nn.Parameter(torch.tensor(math.log(recipe["scale"])), requires_grad=recipe["learn"])
    loss_fn = LOSSES[recipe["loss"]]()
    groups = [
        {"params": image.parameters()},
        {"params": tower.parameters(), "lr": 1e-3 * recipe["location_lr"]},
        {"params": [logit, *loss_fn.parameters()], "weight_decay": 0.0},
    ]
    opt = torch.optim.AdamW(groups, lr=1e-3, weight_decay=0.01)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: min(1.0, (s + 1) / 20) * 0.5 * (1 + math.cos(math.pi * min(1.0, s / steps))))
    for _ in range(steps):
        idx = torch.randint(0, n_train, (batch,))
        texture = 1 + 0.02 * torch.randn(batch, 1)  # the benchmark's 8 px texture cells, averaged over a 32 px crop
        x = means[idx] * texture + 0.004 * torch.randn(batch, 12)  # and its sensor noise (40 DN)
        coords = lonlat[idx] + (torch.rand(batch, 2) * 2 - 1) * 0.01
        scale = logit.clamp(max=math.log(recipe["max_scale"])).exp()
        ids = idx if recipe["mask"] else None  # cool: a location drawn twice is not its own negative
        loss = loss_fn(F.normalize(image(x), dim=-1), F.normalize(tower(coords), dim=-1), scale, ids)
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
        if recipe["learn"]:
            with torch.no_grad():
                logit.clamp_(0.0, math.log(recipe["max_scale"]))
    return tower, float(loss.detach()), float(scale.detach())


def scores(features: dict[str, np.ndarray], world: SyntheticWorld, lonlat: np.ndarray, seed: int) -> dict[tuple[str, str, str], float]:
    """(features, target, labels) -> mean random-CV score (accuracy for land, R² otherwise)."""
    fields = world.fields(lonlat)
    out = {}
    for target, task in bench.TARGETS:
        y = fields[target] if task == "regression" else fields[target].astype(int)
        for (name, cv, n), v in bench.learning_curve(features, lonlat, y, task, "ridge", [50], seed).items():
            if cv == "random":
                out[(name, target, n)] = float(v.mean())
    return out


def section(world: SyntheticWorld, held: np.ndarray, args: argparse.Namespace, batch: int, steps: int) -> None:
    """One batch size: the baselines and every variant, averaged over ``args.seeds`` (and their spread)."""
    cols = [(t, n) for t, _ in bench.TARGETS for n in ("50", "all")]
    n_train = max(args.n_train, 8 * batch)
    print(
        f"world: seed {args.seed}, fields of degree < {args.field_degree}, decay {args.field_decay:g}; "
        f"{steps} steps of batch {batch}, {n_train:,} training locations; seeds {', '.join(map(str, args.seeds))}; "
        "ridge, random 5-fold CV on 3,000 held-out locations\n",
        flush=True,
    )
    rows: dict[str, list[list[float]]] = {}
    for seed in args.seeds:
        torch.manual_seed(seed)
        untrained = build_location_encoder("sphericalharmonics", "siren", output_dim=64, dtype=torch.float32, legendre_polys=10)
        base = {"same tower, untrained": embed_array(untrained, held, dtype=np.float64), "SH L=10": spherical_harmonics(torch.as_tensor(held), 10).numpy()}
        got = scores(base, world, held, seed)
        for name in base:
            rows.setdefault(name, []).append([math.nan, math.nan] + [got[(name, t, n)] for t, n in cols])
        for variant in args.variants:
            tower, loss, scale = train(world, {**RELEASED, **VARIANTS[variant]}, seed, steps, batch, n_train, 64)
            got = scores({"pretrained": embed_array(tower, held, dtype=np.float64)}, world, held, seed)
            rows.setdefault(variant, []).append([loss, scale] + [got[("pretrained", t, n)] for t, n in cols])
            print(f"batch {batch}, seed {seed}, {variant}: " + " ".join(f"{x:.3f}" for x in rows[variant][-1]), file=sys.stderr, flush=True)
    header = "| variant | final loss | multiplier | " + " | ".join(f"{t} n={n}" for t, n in cols) + " |"
    rule = "|---|---|---|" + "---|" * len(cols)
    tables = [("", np.mean)] if len(args.seeds) == 1 else [("", np.mean), (f"standard deviation over {len(args.seeds)} seeds\n\n", np.std)]
    for title, stat in tables:
        print(title + header + "\n" + rule)
        for name, values in rows.items():
            v = stat(np.array(values), axis=0)
            loss_scale = "| | " if math.isnan(v[0]) else f"{v[0]:.2f} | {v[1]:.1f} | "
            print(f"| {name} | " + loss_scale + " | ".join(f"{x:.3f}" for x in v[2:]) + " |")
        print(flush=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seed", type=int, default=0, help="the world and its held-out locations (and training, without --seeds)")
    parser.add_argument("--seeds", type=int, nargs="+", help="training seeds: rows are their mean, a second table their spread")
    parser.add_argument("--field-degree", type=int, default=24)
    parser.add_argument("--field-decay", type=float, default=0.5)
    parser.add_argument("--steps", type=int, nargs="+", default=[800], help="steps per run: one value, or one per batch size")
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--batch-sizes", type=int, nargs="+", help="one section per batch size (default: --batch-size)")
    parser.add_argument("--n-train", type=int, default=6000, help="training locations (at least 8 batches)")
    parser.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS), metavar="NAME")
    args = parser.parse_args(argv)
    args.seeds = args.seeds or [args.seed]
    batches = args.batch_sizes or [args.batch_size]
    if len(args.steps) not in (1, len(batches)):
        parser.error(f"--steps takes one value or one per batch size ({len(batches)}), got {len(args.steps)}")
    torch.set_num_threads(1)
    world = SyntheticWorld(seed=args.seed, field_degree=args.field_degree, field_decay=args.field_decay)
    held = uniform_sphere(3000, args.seed + 12)
    for batch, steps in zip(batches, args.steps * len(batches) if len(args.steps) == 1 else args.steps, strict=True):
        section(world, held, args, batch, steps)
    return 0


if __name__ == "__main__":
    sys.exit(main())
