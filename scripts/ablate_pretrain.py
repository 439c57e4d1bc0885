#!/usr/bin/env python
"""Why pretraining lost the strongest signal: a fast stand-in of the synthetic benchmark for ablations.

The world, the location tower (Siren(SH) L=10, 64-d), the losses (``satclip.loss``) and the ridge
probes are those of ``scripts/bench_pretrain_quality.py``; the image tower is replaced by an MLP on
each patch's 12 band means (with the patch-level texture and sensor noise of the benchmark's
patches), so one 800-step run takes seconds instead of minutes. Each variant changes one thing of
the released recipe (learned temperature from 1/0.07, clamped at 100, InfoNCE, SIREN w0 = 30, one
learning rate); the table gives the probes on 3,000 held-out locations (random 5-fold CV, 50 and
all labels) for the pretrained tower, and the untrained baselines once.

Usage: ``python scripts/ablate_pretrain.py [--seed 0] [--field-degree 24 --field-decay 0.5]
[--variants released fixed-1 ...]`` (about 1 minute per variant on one core).
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

from satclip.eval.synthetic import SyntheticWorld, uniform_sphere  # noqa: E402
from satclip.io.embed import embed_array  # noqa: E402
from satclip.location import build_location_encoder, spherical_harmonics  # noqa: E402
from satclip.loss import LOSSES  # noqa: E402

RELEASED = {"loss": "infonce", "scale": 1 / 0.07, "learn": True, "max_scale": 100.0, "w0": 30.0, "location_lr": 1.0}
VARIANTS = {
    "released": {},
    "fixed 10": {"scale": 10.0, "learn": False},
    "fixed 5": {"scale": 5.0, "learn": False},
    "fixed 3": {"scale": 3.0, "learn": False},
    "fixed 2": {"scale": 2.0, "learn": False},
    "fixed 1 (cool)": {"scale": 1.0, "learn": False},
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
        loss = loss_fn(F.normalize(image(x), dim=-1), F.normalize(tower(coords), dim=-1), scale)
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


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--field-degree", type=int, default=24)
    parser.add_argument("--field-decay", type=float, default=0.5)
    parser.add_argument("--steps", type=int, default=800)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS), metavar="NAME")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    world = SyntheticWorld(seed=args.seed, field_degree=args.field_degree, field_decay=args.field_decay)
    held = uniform_sphere(3000, args.seed + 12)
    cols = [(t, n) for t, _ in bench.TARGETS for n in ("50", "all")]
    print(
        f"world: seed {args.seed}, fields of degree < {args.field_degree}, decay {args.field_decay:g}; "
        f"{args.steps} steps of batch {args.batch_size}; ridge, random 5-fold CV on 3,000 held-out locations\n"
    )
    print("| variant | final loss | multiplier | " + " | ".join(f"{t} n={n}" for t, n in cols) + " |")
    print("|---|---|---|" + "---|" * len(cols))
    torch.manual_seed(args.seed)
    untrained = build_location_encoder("sphericalharmonics", "siren", output_dim=64, dtype=torch.float32, legendre_polys=10)
    base = scores(
        {"same tower, untrained": embed_array(untrained, held, dtype=np.float64), "SH L=10": spherical_harmonics(torch.as_tensor(held), 10).numpy()},
        world,
        held,
        args.seed,
    )
    for name in ("same tower, untrained", "SH L=10"):
        print(f"| {name} | | | " + " | ".join(f"{base[(name, t, n)]:.3f}" for t, n in cols) + " |")
    for variant in args.variants:
        tower, loss, scale = train(world, {**RELEASED, **VARIANTS[variant]}, args.seed, args.steps, args.batch_size, 6000, 64)
        got = scores({"pretrained": embed_array(tower, held, dtype=np.float64)}, world, held, args.seed)
        print(f"| {variant} | {loss:.2f} | {scale:.1f} | " + " | ".join(f"{got[('pretrained', t, n)]:.3f}" for t, n in cols) + " |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
