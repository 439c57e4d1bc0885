#!/usr/bin/env python
"""Benchmark embedding coordinates with location towers, against a reference-style baseline.

For L = 10 and L = 40 towers of the released architecture (Siren(SH): 2 hidden layers of 512,
256 outputs; random weights) it times, in interleaved rounds so that load on a shared machine hits
every variant alike:

- ``satclip float64`` / ``satclip float32``: ``satclip.io.embed.embed_array`` (validation, exact
  spherical harmonics with the CPU engine, network) over ``--points`` points in total;
- ``satclip tower call float64`` / ``float32``: the tower itself, ``encoder(batch)`` batch by batch, without
  ``embed_array``'s copy into its result;
- ``satclip torch-engine``: float64 with the torch recurrence (the path used on GPUs and in exports);
- ``peak matmul float64`` / ``float32``: one ``--peak-size`` square matrix product in that dtype on the same
  threads: the machine's peak FLOP rate, against which the towers' useful FLOP rate (2 x (L^2 x 512 +
  512 x 512 + 512 x 256) per point) is given;
- ``features only: satclip float64`` / ``float32`` against ``features only: sphericart float64`` / ``float32``:
  ``spherical_harmonics`` of each batch (validation, unit vectors, convention) against sphericart alone on
  the same points' unit vectors, precomputed, in that dtype, both into a preallocated output
  (sphericart's float32 runs its recurrence in float32; satclip computes in float64 and casts);
- ``reference-style``: the reference's approach, over ``--ref-points`` points: one generated closed
  form expression per harmonic (expanded polynomial in cos(theta) with float64 coefficients, times
  (1 - cos^2)^(|m|/2) and cos/sin(m phi)), evaluated harmonic by harmonic and stacked, then the same
  network in float64. At L = 10 it reproduces the reference's features to ~1e-12; at L = 40 it
  shows the same kind of precision loss.

It prints points/s, time per 100k points, the speed ratio against the reference-style baseline
measured in the same run, and how far float32 embeddings are from float64 ones; the summary gives per
L, dtype and thread count the tower against the GEMM bound and against the peak, and the harmonics
against sphericart. ``--profile`` instead times each stage of the tower's chunk pipeline
(satclip.location.fused) on one thread against the peak. ``--file-test``
also runs ``satclip embed`` on generated CSV files of ``--rows`` rows and of a tenth of that, and
reports each run's peak resident memory: flat memory means both peaks are about equal.

    python scripts/bench_embed.py                          # 1M points, 1 thread
    python scripts/bench_embed.py --points 200000 --file-test --rows 1000000
    python scripts/bench_embed.py --profile --points 100000
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import subprocess
import sys
import tempfile
import time
from math import comb, factorial
from pathlib import Path


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--points", type=int, default=1_000_000, help="points per satclip variant, over all rounds (default 1M)")
    p.add_argument("--ref-points", type=int, default=20_000, help="points for the reference-style baseline (default 20k; at least one batch per round)")
    p.add_argument("--degrees", type=int, nargs="+", default=[10, 40], help="values of L (default 10 40)")
    p.add_argument("--rounds", type=int, default=10, help="interleaved rounds; medians over them (default 10)")
    p.add_argument("--batch-size", type=int, default=8192, help="points per forward pass (default 8192)")
    p.add_argument("--threads", type=int, nargs="+", default=[1], help="torch/OpenMP threads; several values run one process each (default 1)")
    p.add_argument("--no-reference", action="store_true", help="skip the reference-style baseline (slow) in the timings")
    p.add_argument("--device", default="cpu", help="cuda: time the towers on the GPU instead (device_bench), --points in batches of --batch-size")
    p.add_argument("--compile", action="store_true", help="also time torch.compile: the chunked path's compiled sine on CPU, a compiled network on CUDA")
    p.add_argument("--file-test", action="store_true", help="also check that `satclip embed` memory stays flat")
    p.add_argument("--rows", type=int, default=1_000_000, help="rows of the --file-test CSV (default 1M)")
    p.add_argument("--peak-size", type=int, default=2048, help="side of the square matrix product giving the peak FLOP rate (default 2048)")
    p.add_argument("--features-only", action="store_true", help="time only the harmonics against sphericart alone")
    p.add_argument("--profile", action="store_true", help="time each stage of the chunk pipeline on one thread instead (--points per stage)")
    return p.parse_args()


def random_lonlat(n: int, seed: int = 0):
    """Uniform points on the sphere, (n, 2) float64 [lon, lat] degrees (numpy)."""
    import numpy as np

    rng = np.random.default_rng(seed)
    return np.stack([rng.uniform(-180, 180, n), np.degrees(np.arcsin(rng.uniform(-1, 1, n)))], axis=1)


# ------------------------------------------------------------------------ reference-style baseline


def _legendre_derivative(l: int, m: int) -> dict[int, float]:
    """Coefficients {power: c} of d^m/dx^m P_l(x), from P_l = 2^-l sum_k (-1)^k C(l,k) C(2l-2k,l) x^(l-2k)."""
    coeffs = {}
    for k in range(l // 2 + 1):
        n = l - 2 * k
        if n >= m:
            coeffs[n - m] = (-1) ** k * comb(l, k) * comb(2 * l - 2 * k, l) * factorial(n) // factorial(n - m) / 2**l
    return coeffs


def reference_style_harmonics(lonlat, L: int):
    """The reference's way: one closed-form expression per (l, m), evaluated one after the other, stacked."""
    import torch

    phi = torch.deg2rad(lonlat[:, 0] + 180)
    theta = torch.deg2rad(lonlat[:, 1] + 90)
    columns = []
    for l in range(L):
        for m in range(-l, l + 1):
            am = abs(m)
            k = math.sqrt((2 * l + 1) / (4 * math.pi) * factorial(l - am) / factorial(l + am))
            norm = math.pi * k if m == 0 else math.sqrt(2) * k  # the released checkpoints' convention
            y = 0.0
            for power, c in _legendre_derivative(l, am).items():
                y = y + (norm * c) * torch.cos(theta) ** power
            if am:
                y = y * (1.0 - torch.cos(theta) ** 2) ** (am / 2)
                y = y * (torch.cos(am * phi) if m > 0 else torch.sin(am * phi))
            columns.append(y * torch.ones_like(phi))
    return torch.stack(columns, dim=-1)


def reference_style_embed(encoder, lonlat, batch_size: int) -> None:
    batched(lambda b: encoder.nnet(reference_style_harmonics(b, encoder.posenc.legendre_polys)), lonlat, batch_size)


# ------------------------------------------------------------------------------------- timing


def batched(fn, lonlat, batch_size: int) -> None:
    """Apply ``fn`` to (batch, 2) tensors of ``lonlat`` in turn (as the embedders do), discarding results."""
    import torch

    with torch.inference_mode():
        for i in range(0, lonlat.shape[0], batch_size):
            fn(torch.from_numpy(lonlat[i : i + batch_size]))


def timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def plain_embed(encoder, lonlat, batch_size: int):
    """The tower's plain path (before the chunked one): validate, harmonics of the batch, cast, one layer at a time."""
    import numpy as np
    import torch

    from satclip.geo import validate_lonlat

    out = np.empty((lonlat.shape[0], encoder.output_dim), dtype=torch.empty((), dtype=encoder.dtype).numpy().dtype)
    with torch.inference_mode():
        for i in range(0, lonlat.shape[0], batch_size):
            batch = validate_lonlat(torch.from_numpy(lonlat[i : i + batch_size]))
            out[i : i + batch_size] = encoder.nnet(encoder.posenc(batch).to(encoder.dtype)).numpy()
    return out


def gemm_bound(encoder, feats, batch_size: int):
    """The floor: the network's matrix products alone on precomputed features in its dtype, into preallocated
    outputs, ``batch_size`` rows at a time (no bias, no sine, no harmonics, no validation)."""
    import torch

    weights = [p.detach().t() for p in encoder.nnet.parameters() if p.ndim == 2]
    outs = [torch.empty(min(batch_size, feats.shape[0]), w.shape[1], dtype=w.dtype, device=w.device) for w in weights]

    def run() -> None:
        with torch.inference_mode():
            for i in range(0, feats.shape[0], batch_size):
                h = feats[i : i + batch_size]
                for w, o in zip(weights, outs):
                    h = torch.mm(h, w, out=o[: h.shape[0]])

    return run


FEATURE_POINTS = 10  # the harmonics take ~1% of the tower's time: ten times the points, so that a round is not a few ms


def tower_flops(L: int) -> int:
    """Useful floating-point operations per point of the released shape: the three matrix products."""
    return 2 * (L * L * 512 + 512 * 512 + 512 * 256)


def peak_matmul(size: int, dtype):
    """One ``size`` x ``size`` square matrix product in ``dtype`` into a preallocated output; returns its FLOP count."""
    import torch

    a, b = torch.randn(size, size, dtype=dtype), torch.randn(size, size, dtype=dtype)
    c = torch.empty(size, size, dtype=dtype)

    def run() -> int:
        torch.mm(a, b, out=c)
        return 2 * size**3

    return run


def unit_vectors(lonlat, dtype):
    """sphericart's input for satclip's convention (theta from the south pole, phi = lon + 180 deg), in ``dtype``."""
    import numpy as np

    lon, lat = np.radians(lonlat).T
    return np.ascontiguousarray(np.stack([-np.cos(lat) * np.cos(lon), -np.cos(lat) * np.sin(lon), -np.sin(lat)], 1), dtype=dtype)


def with_compiled_sine(fn):
    from satclip.location import fused

    os.environ[fused.COMPILE_ENV] = "1"
    try:
        return fn()
    finally:
        del os.environ[fused.COMPILE_ENV]


def bench_degree(L: int, args: argparse.Namespace) -> dict[str, float]:
    import numpy as np
    import sphericart
    import torch

    from satclip.io.embed import embed_array
    from satclip.location import build_location_encoder, spherical_harmonics

    torch.manual_seed(0)
    enc64 = build_location_encoder(legendre_polys=L).eval()
    enc32 = build_location_encoder(legendre_polys=L).eval()
    enc32.load_state_dict(enc64.state_dict())
    enc32 = enc32.float()
    enc_torch = build_location_encoder(legendre_polys=L, engine="torch").eval()
    enc_torch.load_state_dict(enc64.state_dict())

    # at least one full batch per round for the baseline too: batch size changes GEMM/elementwise speed
    per_round, ref_per_round = args.points // args.rounds, max(args.batch_size, args.ref_points // args.rounds)
    feats64 = spherical_harmonics(torch.from_numpy(random_lonlat(per_round, seed=5)), L)
    bound64, bound32 = gemm_bound(enc64, feats64, args.batch_size), gemm_bound(enc32, feats64.float(), args.batch_size)
    calc = sphericart.SphericalHarmonics(L - 1)

    # Both write each batch into a preallocated output (sphericart's wrapper without its allocation): a fresh
    # 8192 x 1600 output per batch would time the allocator's page faults (they vary by 10x with its state)
    features = {d: np.empty((args.batch_size, L * L), dtype=d) for d in (np.float64, np.float32)}

    def sphericart_alone(dtype):
        def prepare(x):
            xyz, out = unit_vectors(x, dtype), features[dtype]
            return lambda: [
                calc._compute_numpy(xyz[i : i + args.batch_size], out[: xyz[i : i + args.batch_size].shape[0]], None, None)
                for i in range(0, xyz.shape[0], args.batch_size)
            ]

        return prepare

    def satclip_features(dtype):
        out = torch.from_numpy(features[dtype])
        return lambda x: batched(lambda b: spherical_harmonics(b, L, out=out[: b.shape[0]]), x, args.batch_size)

    peaks = {"float64": peak_matmul(args.peak_size, torch.float64), "float32": peak_matmul(args.peak_size, torch.float32)}
    variants = {
        "features only: satclip float64": (FEATURE_POINTS * per_round, satclip_features(np.float64)),
        "features only: satclip float32": (FEATURE_POINTS * per_round, satclip_features(np.float32)),
        "features only: sphericart float64": (FEATURE_POINTS * per_round, sphericart_alone(np.float64)),
        "features only: sphericart float32": (FEATURE_POINTS * per_round, sphericart_alone(np.float32)),
        "features only: reference-style": (ref_per_round, lambda x: batched(lambda b: reference_style_harmonics(b, L), x, args.batch_size)),
        "GEMM bound float64": (per_round, lambda x: bound64()),
        "GEMM bound float32": (per_round, lambda x: bound32()),
        "satclip float64": (per_round, lambda x: embed_array(enc64, x, batch_size=args.batch_size)),
        "satclip float32": (per_round, lambda x: embed_array(enc32, x, batch_size=args.batch_size)),
        "satclip tower call float64": (per_round, lambda x: batched(enc64, x, args.batch_size)),
        "satclip tower call float32": (per_round, lambda x: batched(enc32, x, args.batch_size)),
        "plain path float64": (per_round, lambda x: plain_embed(enc64, x, args.batch_size)),
        "plain path float32": (per_round, lambda x: plain_embed(enc32, x, args.batch_size)),
        "satclip torch-engine float64": (per_round, lambda x: embed_array(enc_torch, x, batch_size=args.batch_size)),
        "reference-style float64": (ref_per_round, lambda x: reference_style_embed(enc64, x, args.batch_size)),
    }
    if args.compile:  # the chunked path with its optional torch.compile'd sine (satclip.location.fused)
        for dtype, enc in (("float64", enc64), ("float32", enc32)):
            variants[f"satclip compiled sine {dtype}"] = (
                per_round,
                lambda x, enc=enc: with_compiled_sine(lambda: embed_array(enc, x, batch_size=args.batch_size)),
            )
        for size in (args.batch_size + 1, 3):  # compile before timing (a full chunk and a short one)
            with_compiled_sine(lambda: embed_array(enc64, random_lonlat(size), batch_size=args.batch_size))
            with_compiled_sine(lambda: embed_array(enc32, random_lonlat(size), batch_size=args.batch_size))
    if args.no_reference:
        variants = {k: v for k, v in variants.items() if "reference" not in k}
    if args.features_only:
        variants, peaks = {k: v for k, v in variants.items() if k.startswith("features only: s")}, {}
    warm = random_lonlat(min(args.batch_size, 1000), seed=1)  # first calls: sphericart's library and calculators
    for name, (_, fn) in variants.items():
        if name.startswith("features only: s"):
            run = fn(warm)
            if callable(run):
                run()
    seconds: dict[str, list[float]] = {k: [] for k in [*variants, *(f"peak matmul {d}" for d in peaks)]}
    for r in range(args.rounds):
        for name, (n, fn) in variants.items():
            x = random_lonlat(n, seed=1000 * L + r)
            if name.startswith("features only: sphericart"):  # the unit vectors, precomputed: sphericart alone is timed
                run = fn(x)
                seconds[name].append(timed(run) / n)
            else:
                seconds[name].append(timed(lambda: fn(x)) / n)
        for d, peak in peaks.items():  # FLOP per second: seconds per FLOP here
            flops = peak()
            seconds[f"peak matmul {d}"].append(timed(peak) / flops)
    rates = {k: 1.0 / statistics.median(v) for k, v in seconds.items()}
    rates.update({f"spread {k}": (max(v) - min(v)) / statistics.median(v) for k, v in seconds.items()})
    if args.features_only:
        return rates

    check = random_lonlat(min(20_000, args.points), seed=7)
    e64, e32 = embed_array(enc64, check, batch_size=args.batch_size), embed_array(enc32, check, batch_size=args.batch_size)
    p64, p32 = plain_embed(enc64, check, args.batch_size), plain_embed(enc32, check, args.batch_size)
    rates["float64 max abs diff to the plain path"] = float(np.abs(e64 - p64).max())
    rates["float32 max abs diff to the plain path"] = float(np.abs(e32 - p32).max())
    rates["float32 max abs diff"] = float(np.abs(e32 - e64).max())
    rates["float32 max rel diff"] = rates["float32 max abs diff"] / float(np.abs(e64).max())
    return rates


def report(L: int, rates: dict[str, float], threads: int) -> list[dict[str, object]]:
    """Print the table of one degree; return its summary rows (per dtype: the tower against the GEMM bound and the peak,
    the harmonics against sphericart)."""
    print(f"\nL = {L}: {'variant':<34} {'points/s':>12} {'s per 100k':>11} {'x ref-style':>12} {'x GEMM bound':>13} {'of peak':>8} {'spread':>7}")
    for name, rate in rates.items():
        if "diff" in name or name.startswith("spread"):
            continue
        spread = f"{rates[f'spread {name}']:.0%}"
        if name.startswith("peak"):
            print(f"        {name:<34} {rate / 1e9:9.1f} GFLOP/s {'-':>24} {'-':>13} {'1.00':>8} {spread:>7}")
            continue
        ref = rates.get("features only: reference-style" if name.startswith("features") else "reference-style float64")
        dtype = name.rsplit(" ", 1)[-1]
        tower = not name.startswith(("features", "reference"))
        bound = rates.get(f"GEMM bound {dtype}") if tower and "torch-engine" not in name else None
        peak = f"{rate * tower_flops(L) / rates[f'peak matmul {dtype}']:.2f}" if tower else "-"
        print(
            f"        {name:<34} {rate:12.0f} {1e5 / rate:11.2f} {f'{rate / ref:.2f}' if ref else '-':>12} "
            f"{f'{rate / bound:.2f}' if bound else '-':>13} {peak:>8} {spread:>7}"
        )
    if "float32 max abs diff" not in rates:  # --features-only
        return [
            {"L": L, "dtype": d, "threads": threads, "harmonics": rates[f"features only: satclip {d}"] / rates[f"features only: sphericart {d}"]}
            for d in ("float64", "float32")
        ]
    print(
        f"        float32 vs float64: max abs diff {rates['float32 max abs diff']:.2e} "
        f"(relative to max |emb|: {rates['float32 max rel diff']:.2e}); chunked vs plain path: float64 "
        f"{rates['float64 max abs diff to the plain path']:.1e}, float32 {rates['float32 max abs diff to the plain path']:.1e}"
    )
    rows: list[dict[str, object]] = []
    for d in ("float64", "float32"):
        peak = rates[f"peak matmul {d}"] / tower_flops(L)  # the peak in points/s
        row = {"L": L, "dtype": d, "threads": threads, "peak GFLOP/s": rates[f"peak matmul {d}"] / 1e9}
        row |= {k: rates[f"{k} {d}"] / peak for k in ("satclip", "satclip tower call", "GEMM bound", "plain path")}
        row |= {
            "bound": rates[f"satclip {d}"] / rates[f"GEMM bound {d}"],
            "harmonics": rates[f"features only: satclip {d}"] / rates[f"features only: sphericart {d}"],
        }
        rows.append(row)
    return rows


SUMMARY_COLUMNS = {
    "peak GFLOP/s": "peak matmul GFLOP/s",
    "satclip": "**tower / peak**",
    "satclip tower call": "tower call / peak",
    "GEMM bound": "GEMM bound / peak",
    "plain path": "plain path / peak",
    "bound": "tower / GEMM bound",
    "harmonics": "**harmonics / sphericart**",
}


def summary(rows: list[dict[str, object]]) -> None:
    """The Markdown table of every cell: FLOP rates as fractions of the peak, the tower against the GEMM bound, the
    harmonics against sphericart alone (goals: tower >= 0.75 of peak, harmonics >= 0.8 of sphericart)."""
    print("\n| L | dtype | threads | " + " | ".join(SUMMARY_COLUMNS.values()) + " |")
    print("|---|---|---|" + "---|" * len(SUMMARY_COLUMNS))
    for r in sorted(rows, key=lambda r: (r["L"], r["dtype"] != "float64", r["threads"])):
        cells = ["-" if k not in r else f"{float(r[k]):.1f}" if k == "peak GFLOP/s" else f"{float(r[k]):.2f}" for k in SUMMARY_COLUMNS]  # type: ignore[arg-type]
        print(f"| {r['L']} | {r['dtype']} | {r['threads']} | " + " | ".join(cells) + " |")


# ------------------------------------------------------------------------------------ profile


def profile(args: argparse.Namespace) -> None:
    """Per stage of the chunk pipeline (satclip.location.fused, one thread): microseconds per point and the share of
    the tower's time (``embed_array``), each stage timed around the same calls the pipeline makes, in
    ``fused.CHUNK_ROWS``-row chunks over ``--points`` points; the products also as a fraction of the peak. "rest":
    the tower's time not in a stage (Python, the tower's own output and its first touch). Medians over ``--rounds``."""
    import math

    import numpy as np
    import torch

    from satclip.geo import validate_lonlat
    from satclip.io.embed import embed_array
    from satclip.location import build_location_encoder, fused
    from satclip.location.harmonics import fill_harmonics, m0_columns

    rows = fused.CHUNK_ROWS
    print(f"\nProfile: one thread, {args.points} points in chunks of {rows} rows, medians of {args.rounds} rounds (us per point)")
    print("| L | dtype | tower (embed_array) | validation | harmonics | products | sines (w0 incl.) | result copy | rest | products / peak | tower / peak |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for L in args.degrees:
        for dtype in (torch.float64, torch.float32):
            torch.manual_seed(0)
            enc = build_location_encoder(legendre_polys=L).eval().to(dtype)
            layers = [*enc.nnet.layers, enc.nnet.last_layer]
            weights = [layer.weight.detach().t().clone() for layer in layers]
            weights[0][m0_columns(L)] *= math.pi  # as the pipeline folds it
            biases = [layer.bias.detach() for layer in layers]
            feats = torch.empty(rows, L * L, dtype=dtype)
            hidden = [torch.empty(rows, w.shape[1], dtype=dtype) for w in weights]
            tower_out = torch.zeros(args.batch_size, 256, dtype=dtype)
            peak = peak_matmul(args.peak_size, dtype)
            stages: dict[str, list[float]] = {k: [] for k in ("tower", "validation", "harmonics", "products", "sines", "result copy", "peak")}
            for r in range(args.rounds):
                x = torch.from_numpy(random_lonlat(args.points, seed=r))
                stages["tower"].append(timed(lambda: embed_array(enc, x.numpy(), batch_size=args.batch_size)) / args.points)
                spent = dict.fromkeys(("validation", "harmonics", "products", "sines", "result copy"), 0.0)
                result = np.empty((args.points, 256), dtype=tower_out.numpy().dtype)
                for b in range(0, args.points, args.batch_size):
                    batch = x[b : b + args.batch_size]
                    start = time.perf_counter()
                    validate_lonlat(batch)
                    spent["validation"] += time.perf_counter() - start
                    for c in range(0, batch.shape[0], rows):
                        chunk = batch[c : c + rows]
                        t0 = time.perf_counter()
                        fill_harmonics(chunk, L, convention="orthonormal", engine="auto", out=feats[: chunk.shape[0]])
                        h = feats[: chunk.shape[0]]
                        spent["harmonics"] += time.perf_counter() - t0
                        for i, (w, bias, out) in enumerate(zip(weights, biases, hidden)):
                            t0 = time.perf_counter()
                            torch.addmm(bias, h, w, out=out[: h.shape[0]])
                            t1 = time.perf_counter()
                            spent["products"] += t1 - t0
                            h = out[: h.shape[0]]
                            if i < len(layers) - 1:
                                fused._sine_(h, float(layers[i].w0), compiled=None)
                                spent["sines"] += time.perf_counter() - t1
                    t0 = time.perf_counter()  # embed_array's copy of the batch into its result (that result's first touch)
                    torch.from_numpy(result[b : b + batch.shape[0]]).copy_(tower_out[: batch.shape[0]])
                    spent["result copy"] += time.perf_counter() - t0
                for k, v in spent.items():
                    stages[k].append(v / args.points)
                stages["peak"].append(timed(peak) / peak())
            med = {k: statistics.median(v) for k, v in stages.items()}
            rest = med["tower"] - sum(med[k] for k in ("validation", "harmonics", "products", "sines", "result copy"))
            flops = tower_flops(L)
            us = {k: f"{med[k] * 1e6:.2f} ({med[k] / med['tower']:.0%})" for k in ("validation", "harmonics", "products", "sines", "result copy")}
            print(
                f"| {L} | {str(dtype).removeprefix('torch.')} | {med['tower'] * 1e6:.2f} | {us['validation']} | {us['harmonics']} | {us['products']} "
                f"| {us['sines']} | {us['result copy']} | {rest * 1e6:.2f} | {flops * med['peak'] / med['products']:.2f} | {flops * med['peak'] / med['tower']:.2f} |"
            )


# ------------------------------------------------------------------------------- memory check


def _peak_rss_kib(pid: int) -> int:
    """VmHWM (peak resident memory of the process's current image) from /proc, 0 once it is gone."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def file_test(rows: int, threads: int) -> None:
    import numpy as np

    import satclip
    from satclip.io.export import export_location_encoder

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        export_location_encoder(satclip.build_location_encoder(legendre_polys=10).eval(), tmp / "tower")
        for n in (rows // 10, rows):
            lonlat = random_lonlat(n, seed=n)
            with open(tmp / f"c{n}.csv", "w") as f:
                f.write("id,lon,lat\n")
                np.savetxt(f, np.column_stack([np.arange(n), lonlat]), fmt=["%d", "%.10f", "%.10f"], delimiter=",")
        for n in (rows // 10, rows):
            cmd = [
                sys.executable,
                "-m",
                "satclip.cli",
                "embed",
                "--checkpoint",
                str(tmp / "tower"),
                "--input",
                str(tmp / f"c{n}.csv"),
                "--output",
                str(tmp / f"e{n}.npy"),
                "--dtype",
                "float32",
                "--no-progress",
            ]
            env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
            start = time.perf_counter()
            proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL)
            peak = 0
            while proc.poll() is None:
                peak = max(peak, _peak_rss_kib(proc.pid))
                time.sleep(0.05)
            wall = time.perf_counter() - start
            out = np.load(tmp / f"e{n}.npy", mmap_mode="r")
            print(
                f"satclip embed {n:>9} rows: exit {proc.returncode}, output {out.shape} {out.dtype}, "
                f"peak RSS {peak / 1024:.0f} MiB, {wall:.1f} s ({n / wall:.0f} rows/s)"
            )
            (tmp / f"e{n}.npy").unlink()


def device_bench(args: argparse.Namespace) -> None:
    """Towers on a device (``--device cuda``): points/s over ``--points`` points in batches of ``--batch-size`` already on the
    device (harmonics with the torch engine), the GEMM bound there, and the largest difference to the CPU
    result on 20k points (float64 <= 1e-10, float32 <= 1e-5 required)."""
    import numpy as np
    import torch

    from satclip.io.embed import embed_array
    from satclip.location import build_location_encoder, spherical_harmonics

    dev = torch.device(args.device)
    name = torch.cuda.get_device_name(dev) if dev.type == "cuda" else str(dev)
    sync = (lambda: torch.cuda.synchronize(dev)) if dev.type == "cuda" else (lambda: None)
    print(f"torch {torch.__version__}, {name}, {args.points} points in batches of {args.batch_size}")
    print("| L | dtype | variant | points/s | x GEMM bound | max abs diff to CPU | limit |")
    print("|---|---|---|---|---|---|---|")
    failed = False
    for L in args.degrees:
        torch.manual_seed(0)
        base = build_location_encoder(legendre_polys=L).eval()
        for dtype, limit in ((torch.float64, 1e-10), (torch.float32, 1e-5)):
            cpu = build_location_encoder(legendre_polys=L).eval()
            cpu.load_state_dict(base.state_dict())
            cpu = cpu.to(dtype)
            gpu = build_location_encoder(legendre_polys=L, engine="torch").eval()
            gpu.load_state_dict(base.state_dict())
            gpu = gpu.to(device=dev, dtype=dtype)
            x = torch.from_numpy(random_lonlat(args.batch_size, seed=L)).to(dev)
            feats = spherical_harmonics(x, L, engine="torch").to(dtype)
            steps = max(1, args.points // args.batch_size)

            def timed_steps(fn) -> float:
                fn()
                sync()
                start = time.perf_counter()
                for _ in range(steps):
                    fn()
                sync()
                return steps * args.batch_size / (time.perf_counter() - start)

            bound = timed_steps(gemm_bound(gpu, feats, args.batch_size))
            variants = {"tower": lambda: gpu(x)}
            if args.compile:
                nnet = torch.compile(gpu.nnet)
                variants["tower, torch.compile'd network"] = lambda: nnet(gpu.posenc(x).to(dtype))
            host = random_lonlat(min(args.points, 1 << 20), seed=3)
            check = random_lonlat(20_000, seed=7)
            diff = float(np.abs(embed_array(gpu, check, batch_size=4096, device=dev).astype(np.float64) - embed_array(cpu, check, batch_size=4096)).max())
            failed |= diff > limit
            label_dtype = str(dtype).removeprefix("torch.")
            with torch.inference_mode():
                print(f"| {L} | {label_dtype} | GEMM bound | {bound:.3g} | 1.00 | - | - |")
                rates = {label: timed_steps(fn) for label, fn in variants.items()}
            start = time.perf_counter()
            embed_array(gpu, host, batch_size=args.batch_size, device=dev)  # numpy in, numpy out: the transfers included
            rates[f"embed_array, {host.shape[0]} points from and to host memory"] = host.shape[0] / (time.perf_counter() - start)
            for label, rate in rates.items():
                print(f"| {L} | {label_dtype} | {label} | {rate:.3g} | {rate / bound:.2f} | {diff:.1e} | {limit:.0e} |")
    if failed:
        sys.exit(f"{args.device} outputs differ from the CPU ones by more than the limit")


def main() -> None:
    args = parse_args()
    if args.device != "cpu":
        device_bench(args)
        return
    if len(args.threads) > 1:  # one process per thread count: OpenMP pools are sized at start-up
        rows = []
        for threads in args.threads:
            argv = [a for a in sys.argv[1:]]
            i = argv.index("--threads")
            argv[i + 1 : i + 1 + len(args.threads)] = [str(threads)]
            out = subprocess.run([sys.executable, __file__, *argv], check=True, capture_output=True, text=True).stdout
            print("\n".join(line for line in out.splitlines() if not line.startswith("SUMMARY ")))
            rows += [json.loads(line.removeprefix("SUMMARY ")) for line in out.splitlines() if line.startswith("SUMMARY ")]
        print(f"\n{' '.join([os.path.basename(sys.executable), 'scripts/bench_embed.py', *sys.argv[1:]])}")
        summary(rows)
        return
    threads = 1 if args.profile else args.threads[0]
    os.environ["OMP_NUM_THREADS"] = str(threads)
    import torch

    torch.set_num_threads(threads)
    if args.profile:
        profile(args)
        return
    ref_points = max(args.batch_size, args.ref_points // args.rounds) * args.rounds
    print(
        f"torch {torch.__version__}, {threads} thread(s), batch {args.batch_size}, {args.points} points per satclip "
        f"variant, {ref_points} for the reference-style baseline, {args.rounds} interleaved rounds, load average "
        f"{os.getloadavg()[0]:.1f}"
    )
    rows = []
    for L in args.degrees:
        rows += report(L, bench_degree(L, args), threads)
    for row in rows:
        print("SUMMARY " + json.dumps(row))
    summary(rows)
    if args.file_test:
        print()
        file_test(args.rows, threads)


if __name__ == "__main__":
    main()
