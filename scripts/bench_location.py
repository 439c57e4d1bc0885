#!/usr/bin/env python
"""Benchmark satclip's spherical harmonics against sphericart, and their memory for 1M points.

Times, for 100k random points in float64 at L = 10 and L = 40:

- ``sphericart``: ``sphericart.SphericalHarmonics(L-1).compute`` on the points' unit vectors (its
  own convention; the baseline, no coordinate handling);
- ``satclip auto``: ``spherical_harmonics(lonlat, L)`` (validation, the angle transform and the
  satclip convention; on CPU its engine is sphericart);
- ``satclip torch``: the same with ``engine="torch"`` (the recurrence used on GPUs).

The three are run in turn, ``--repeats`` times, so that load on a shared machine hits them alike;
the table gives median wall, user-CPU and system-CPU times (all threads) and the throughput ratio
satclip / sphericart of the medians. On an oversubscribed machine the wall times mostly measure
waiting for a core, and the system time is dominated by the kernel's handling of the fresh
output's pages (occasionally ~1 s of huge-page compaction for any of the three); the user CPU
time is the computation itself.
``--memory`` also writes the features of 1M points at L = 40 into a preallocated file-backed
output (``out=``) and reports the peak anonymous memory beyond it (sampled from /proc).

    python scripts/bench_location.py                 # 1 thread
    python scripts/bench_location.py --threads 2 --memory
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Callable


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--points", type=int, default=100_000, help="points per timing (default 100000)")
    p.add_argument("--degrees", type=int, nargs="+", default=[10, 40], help="values of L (default 10 40)")
    p.add_argument("--repeats", type=int, default=7, help="interleaved repetitions per measurement (default 7)")
    p.add_argument("--threads", type=int, default=1, help="OpenMP/torch threads for every engine (default 1)")
    p.add_argument("--memory", action="store_true", help="also measure memory for --memory-points at L=40 with out=")
    p.add_argument("--memory-points", type=int, default=1_000_000)
    p.add_argument("--memory-dtype", choices=["float32", "float64"], default="float32", help="dtype of the file-backed output")
    return p.parse_args()


def random_lonlat(n: int, seed: int = 0):
    """Uniform points on the sphere as an (n, 2) float64 [lon, lat] degree tensor."""
    import torch

    g = torch.Generator().manual_seed(seed)
    lon = torch.rand(n, generator=g, dtype=torch.float64) * 360 - 180
    lat = torch.rad2deg(torch.asin(torch.rand(n, generator=g, dtype=torch.float64) * 2 - 1))
    return torch.stack([lon, lat], 1)


def _clock() -> tuple[float, float, float]:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return time.perf_counter(), usage.ru_utime, usage.ru_stime


def interleaved(fns: dict[str, Callable[[], object]], repeats: int) -> dict[str, tuple[float, float, float]]:
    """Median (wall, user, system) seconds of each function, calling them in turn ``repeats`` times after a warm-up."""
    times: dict[str, list[tuple[float, float, float]]] = {k: [] for k in fns}
    for f in fns.values():
        f()
    for _ in range(repeats):
        for name, f in fns.items():
            start = _clock()
            f()
            times[name].append(tuple(b - a for a, b in zip(start, _clock())))
    return {k: tuple(statistics.median(t[i] for t in v) for i in range(3)) for k, v in times.items()}


def bench_speed(args: argparse.Namespace) -> list[str]:
    import numpy as np
    import sphericart

    from satclip.location import spherical_harmonics

    lonlat = random_lonlat(args.points)
    lon, lat = np.radians(lonlat.numpy()).T
    xyz = np.ascontiguousarray(np.stack([np.cos(lat) * np.cos(lon), np.cos(lat) * np.sin(lon), np.sin(lat)], 1))
    rows = [
        "| L | method | wall s | user s | sys s | Mpoints/s (wall) | vs sphericart (wall) | vs sphericart (user CPU) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for L in args.degrees:
        calc = sphericart.SphericalHarmonics(L - 1)
        fns = {
            "sphericart (baseline)": lambda: calc.compute(xyz),
            "satclip auto": lambda: spherical_harmonics(lonlat, L),
            "satclip torch": lambda: spherical_harmonics(lonlat, L, engine="torch"),
        }
        med = interleaved(fns, args.repeats)
        base_wall, base_user, _ = med["sphericart (baseline)"]
        for name, (wall, user, system) in med.items():
            rows.append(
                f"| {L} | {name} | {wall:.4f} | {user:.4f} | {system:.4f} | {args.points / wall / 1e6:.2f} "
                f"| {base_wall / wall:.2f}x | " + (f"{base_user / user:.2f}x |" if user > 0 else "n/a (no CPU time measured) |")
            )
    return rows


def _rss_anon_bytes() -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("RssAnon:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError("RssAnon not found in /proc/self/status (Linux only)")


def bench_memory(args: argparse.Namespace) -> list[str]:
    """Peak anonymous memory beyond a file-backed (memory-mapped) output while filling it with out=."""
    import numpy as np
    import torch

    from satclip.location import spherical_harmonics

    n, L = args.memory_points, 40
    lonlat = random_lonlat(n, seed=1)
    with tempfile.TemporaryDirectory() as tmp:
        out_np = np.memmap(os.path.join(tmp, "features.bin"), dtype=args.memory_dtype, mode="w+", shape=(n, L * L))
        out = torch.from_numpy(out_np)
        base, peak, done = _rss_anon_bytes(), [0], threading.Event()

        def sample() -> None:
            while not done.is_set():
                peak[0] = max(peak[0], _rss_anon_bytes())
                time.sleep(0.002)

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        t0 = time.perf_counter()
        spherical_harmonics(lonlat, L, out=out)
        seconds = time.perf_counter() - t0
        done.set()
        sampler.join()
        check = spherical_harmonics(lonlat[-1000:], L).to(out.dtype)
        assert torch.equal(out[-1000:], check), "out= result differs from the direct computation"
        out_gb = out.numel() * out.element_size() / 1e9
        del out, out_np
    extra = (max(peak[0], base) - base) / 1e9
    return [
        "",
        f"Memory: {n} points, L={L}, out= a {out_gb:.1f} GB {args.memory_dtype} memory map: "
        f"peak anonymous memory beyond the output {extra:.2f} GB (limit 2 GB), {seconds:.1f} s.",
    ]


def main() -> None:
    args = parse_args()
    # Before torch/numpy/sphericart start their OpenMP pools: every engine gets the same threads.
    os.environ["OMP_NUM_THREADS"] = str(args.threads)
    from importlib.metadata import version

    import torch

    torch.set_num_threads(args.threads)
    print(
        f"spherical harmonics, {args.points} points, float64, {args.threads} thread(s), median of {args.repeats}, "
        f"load average {os.getloadavg()[0]:.1f}; "
        f"torch {torch.__version__}, sphericart {version('sphericart')}, python {sys.version.split()[0]}, "
        f"{os.cpu_count()} CPUs\n"
    )
    rows = bench_speed(args)
    if args.memory:
        rows += bench_memory(args)
    print("\n".join(rows))


if __name__ == "__main__":
    main()
