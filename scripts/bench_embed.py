#!/usr/bin/env python
"""Benchmark embedding coordinates with location towers, against a reference-style baseline.

For L = 10 and L = 40 towers of the released architecture (Siren(SH): 2 hidden layers of 512,
256 outputs; random weights) it times, in interleaved rounds so that load on a shared machine hits
every variant alike:

- ``satclip float64`` / ``satclip float32``: ``satclip.io.embed.embed_array`` (validation, exact
  spherical harmonics with the CPU engine, network) over ``--points`` points in total;
- ``satclip torch-engine``: float64 with the torch recurrence (the path used on GPUs and in exports);
- ``reference-style``: the reference's approach, over ``--ref-points`` points: one generated closed
  form expression per harmonic (expanded polynomial in cos(theta) with float64 coefficients, times
  (1 - cos^2)^(|m|/2) and cos/sin(m phi)), evaluated harmonic by harmonic and stacked, then the same
  network in float64. At L = 10 it reproduces the reference's features to ~1e-12; at L = 40 it
  shows the same kind of precision loss.

It prints points/s, time per 100k points, the speed ratio against the reference-style baseline
measured in the same run, and how far float32 embeddings are from float64 ones. ``--file-test``
also runs ``satclip embed`` on generated CSV files of ``--rows`` rows and of a tenth of that, and
reports each run's peak resident memory: flat memory means both peaks are about equal.

    python scripts/bench_embed.py                          # 1M points, 1 thread
    python scripts/bench_embed.py --points 200000 --file-test --rows 1000000
"""

from __future__ import annotations

import argparse
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
    p.add_argument("--threads", type=int, default=1, help="torch/OpenMP threads (default 1)")
    p.add_argument("--file-test", action="store_true", help="also check that `satclip embed` memory stays flat")
    p.add_argument("--rows", type=int, default=1_000_000, help="rows of the --file-test CSV (default 1M)")
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


def bench_degree(L: int, args: argparse.Namespace) -> dict[str, float]:
    import numpy as np
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
    variants = {
        "features only: satclip": (per_round, lambda x: batched(lambda b: spherical_harmonics(b, L), x, args.batch_size)),
        "features only: reference-style": (ref_per_round, lambda x: batched(lambda b: reference_style_harmonics(b, L), x, args.batch_size)),
        "satclip float64": (per_round, lambda x: embed_array(enc64, x, args.batch_size)),
        "satclip float32": (per_round, lambda x: embed_array(enc32, x, args.batch_size)),
        "satclip torch-engine float64": (per_round, lambda x: embed_array(enc_torch, x, args.batch_size)),
        "reference-style float64": (ref_per_round, lambda x: reference_style_embed(enc64, x, args.batch_size)),
    }
    seconds: dict[str, list[float]] = {k: [] for k in variants}
    for r in range(args.rounds):
        for name, (n, fn) in variants.items():
            x = random_lonlat(n, seed=1000 * L + r)
            seconds[name].append(timed(lambda: fn(x)) / n)
    rates = {k: 1.0 / statistics.median(v) for k, v in seconds.items()}

    check = random_lonlat(20_000, seed=7)
    e64, e32 = embed_array(enc64, check, args.batch_size), embed_array(enc32, check, args.batch_size)
    rates["float32 max abs diff"] = float(np.abs(e32 - e64).max())
    rates["float32 max rel diff"] = rates["float32 max abs diff"] / float(np.abs(e64).max())
    return rates


def report(L: int, rates: dict[str, float]) -> None:
    print(f"\nL = {L}: {'variant':<32} {'points/s':>12} {'s per 100k':>11} {'x ref-style':>12}")
    for name, rate in rates.items():
        if "diff" not in name:
            ref = rates["features only: reference-style" if name.startswith("features") else "reference-style float64"]
            print(f"        {name:<32} {rate:12.0f} {1e5 / rate:11.2f} {rate / ref:12.2f}")
    print(f"        float32 vs float64: max abs diff {rates['float32 max abs diff']:.2e} (relative to max |emb|: {rates['float32 max rel diff']:.2e})")


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


def main() -> None:
    args = parse_args()
    os.environ["OMP_NUM_THREADS"] = str(args.threads)
    import torch

    torch.set_num_threads(args.threads)
    ref_points = max(args.batch_size, args.ref_points // args.rounds) * args.rounds
    print(
        f"torch {torch.__version__}, {args.threads} thread(s), batch {args.batch_size}, {args.points} points per satclip "
        f"variant, {ref_points} for the reference-style baseline, {args.rounds} interleaved rounds"
    )
    for L in args.degrees:
        report(L, bench_degree(L, args))
    if args.file_test:
        print()
        file_test(args.rows, args.threads)


if __name__ == "__main__":
    main()
